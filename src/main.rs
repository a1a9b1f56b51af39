/// jemalloc rather than glibc's malloc: a request allocates and frees many small buffers on
/// whichever worker thread runs it, and glibc's arenas spent about a fifth of a get-by-id's and
/// of a list's CPU in allocation, lock waits and consolidation (perf). In A/B runs on one
/// seeded database jemalloc served 5-40% more requests at the same peak RSS. (mimalloc was
/// as fast but more than doubled peak RSS on SQLite.)
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    tandem::cli::main()
}
