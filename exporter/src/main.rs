fn main() {
    eprintln!("edgewatt-exporter: not implemented yet");
    std::process::exit(2);
}
