fn main() {
    eprintln!("edgewatt-controller: not implemented yet");
    std::process::exit(2);
}
