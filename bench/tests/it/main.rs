//! The benchmark's end-to-end test, in one test binary as every package's are.

mod smoke;
