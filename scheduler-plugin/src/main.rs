fn main() {
    eprintln!("edgewatt-scheduler: not implemented yet");
    std::process::exit(2);
}
