fn main() -> std::process::ExitCode {
    packfed_node::cli::main()
}
