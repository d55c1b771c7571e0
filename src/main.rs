fn main() {
    std::process::exit(vdmount::cli::main());
}
