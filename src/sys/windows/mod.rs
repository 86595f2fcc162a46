//! Windows: TCP sockets and named pipes. **Work in progress (issue 4):** the
//! crate does not build for Windows yet. What is here is verified under
//! Wine 8 on its own (a probe crate): `pipe`, the message-mode named pipe
//! with overlapped I/O and CPython's framing. Still to come: the socket
//! `Stream`, the names listed in `sys/mod.rs`, a listener engine, and
//! readiness for `wait()`.

#![allow(dead_code)]

mod pipe;
