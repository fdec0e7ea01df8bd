//! Names of io_uring opcodes, as `IORING_OP_*` spells them (lowercase).

const NAMES: [&str; 63] = [
    "nop",
    "readv",
    "writev",
    "fsync",
    "read_fixed",
    "write_fixed",
    "poll_add",
    "poll_remove",
    "sync_file_range",
    "sendmsg",
    "recvmsg",
    "timeout",
    "timeout_remove",
    "accept",
    "async_cancel",
    "link_timeout",
    "connect",
    "fallocate",
    "openat",
    "close",
    "files_update",
    "statx",
    "read",
    "write",
    "fadvise",
    "madvise",
    "send",
    "recv",
    "openat2",
    "epoll_ctl",
    "splice",
    "provide_buffers",
    "remove_buffers",
    "tee",
    "shutdown",
    "renameat",
    "unlinkat",
    "mkdirat",
    "symlinkat",
    "linkat",
    "msg_ring",
    "fsetxattr",
    "setxattr",
    "fgetxattr",
    "getxattr",
    "socket",
    "uring_cmd",
    "send_zc",
    "sendmsg_zc",
    "read_multishot",
    "waitid",
    "futex_wait",
    "futex_wake",
    "futex_waitv",
    "fixed_fd_install",
    "ftruncate",
    "bind",
    "listen",
    "recv_zc",
    "epoll_wait",
    "readv_fixed",
    "writev_fixed",
    "pipe",
];

/// The name of io_uring opcode `opcode` (`"read"` for `IORING_OP_READ`), or
/// `None` for an opcode newer than this table.
pub fn opcode_name(opcode: u32) -> Option<&'static str> {
    NAMES.get(opcode as usize).copied()
}

#[cfg(test)]
mod tests {
    use super::opcode_name;

    #[test]
    fn names_match_the_uapi_numbers() {
        // Spot checks against <linux/io_uring.h>.
        assert_eq!(opcode_name(0), Some("nop"));
        assert_eq!(opcode_name(3), Some("fsync"));
        assert_eq!(opcode_name(13), Some("accept"));
        assert_eq!(opcode_name(22), Some("read"));
        assert_eq!(opcode_name(23), Some("write"));
        assert_eq!(opcode_name(26), Some("send"));
        assert_eq!(opcode_name(27), Some("recv"));
        assert_eq!(opcode_name(62), Some("pipe"));
        assert_eq!(opcode_name(63), None);
    }
}
