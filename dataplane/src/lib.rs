//! Node dataplane: applies plans to the kernel.
