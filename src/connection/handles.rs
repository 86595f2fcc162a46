//! Windows: passing a handle to the peer process, as CPython's
//! `multiprocessing.reduction.DupHandle` does: the sender duplicates it
//! into the receiving process and sends its value there in a message
//! (`proto::handle`); the receiver takes ownership of it.

use std::io;
use std::os::windows::io::{BorrowedHandle, OwnedHandle};

use super::{Authenticated, Connection, RecvHalf, SendHalf, Trust};
use crate::error::{Error, Result};
use crate::proto::handle;
use crate::sys;

impl<T: Trust> SendHalf<T> {
    /// Sends `handle` to process `peer_pid`, which receives it with
    /// [`RecvHalf::recv_handle`]: the handle is duplicated into that
    /// process (same access, not inheritable) and its value there is sent
    /// as one message. The caller keeps its own handle.
    ///
    /// If the message cannot be sent, the duplicate is closed in the other
    /// process again (`DUPLICATE_CLOSE_SOURCE`), so a failed send leaks
    /// nothing. Once sent, the duplicate belongs to the other process: if
    /// it never calls `recv_handle` for it, the handle stays open there
    /// until that process exits.
    ///
    /// # Errors
    /// [`Error::Io`] when process `peer_pid` cannot be opened with
    /// `PROCESS_DUP_HANDLE` (it has exited, or belongs to another user) or
    /// the handle cannot be duplicated; as [`send_bytes`](Self::send_bytes)
    /// when the message cannot be sent.
    pub fn send_handle(&mut self, handle: BorrowedHandle<'_>, peer_pid: u32) -> Result<()> {
        let remote = sys::duplicate_into(handle, peer_pid)?;
        // On failure `remote` is dropped, which closes the duplicate.
        self.send_bytes(&handle::encode(peer_pid, remote.value()))?;
        remote.delivered();
        Ok(())
    }

    /// [`send_handle`](Self::send_handle) to the process at the other end
    /// of this named pipe, as [`peer_credentials`](Self::peer_credentials)
    /// names it: the process that *opened* that end. When that end was
    /// handed on to another process (a child that inherited it), that is
    /// the wrong process, and the receiver refuses the message: name the
    /// process with `send_handle` then.
    ///
    /// # Errors
    /// As [`send_handle`](Self::send_handle), and as
    /// [`peer_credentials`](Self::peer_credentials) for a TCP connection.
    pub fn send_handle_to_peer(&mut self, handle: BorrowedHandle<'_>) -> Result<()> {
        let creds = self.peer_credentials()?;
        let Some(pid) = creds.pid() else {
            let e = io::Error::new(
                io::ErrorKind::Unsupported,
                "the peer's process id is unknown",
            );
            return Err(Error::Io(e));
        };
        self.send_handle(handle, pid)
    }
}

impl RecvHalf<Authenticated> {
    /// Receives a handle that the peer sent with
    /// [`SendHalf::send_handle`]: the next message must be a handle
    /// message, naming a handle duplicated into this process. Only an
    /// authenticated connection has it: the handle is adopted on the
    /// peer's word, as CPython's `DupHandle.detach()` does.
    ///
    /// # Errors
    /// As [`recv_bytes`](Self::recv_bytes); [`Error::Io`] of kind
    /// `InvalidData` when the message is not a handle message (it is
    /// consumed), names another process, or names a value that is not an
    /// open handle here.
    pub fn recv_handle(&mut self) -> Result<OwnedHandle> {
        let msg = self.recv_bytes()?;
        let invalid = |why: String| Error::Io(io::Error::new(io::ErrorKind::InvalidData, why));
        let (pid, value) =
            handle::decode(&msg).map_err(|why| invalid(format!("not a handle message: {why}")))?;
        let me = std::process::id();
        if pid != me {
            return Err(invalid(format!(
                "the handle was duplicated into process {pid}, not this one ({me})"
            )));
        }
        Ok(sys::adopt_handle(value)?)
    }
}

impl<T: Trust> Connection<T> {
    /// Sends `handle` to process `peer_pid`: [`SendHalf::send_handle`].
    ///
    /// # Errors
    /// As [`SendHalf::send_handle`].
    pub fn send_handle(&mut self, handle: BorrowedHandle<'_>, peer_pid: u32) -> Result<()> {
        self.tx.send_handle(handle, peer_pid)
    }

    /// Sends `handle` to the named pipe's peer process:
    /// [`SendHalf::send_handle_to_peer`].
    ///
    /// # Errors
    /// As [`SendHalf::send_handle_to_peer`].
    pub fn send_handle_to_peer(&mut self, handle: BorrowedHandle<'_>) -> Result<()> {
        self.tx.send_handle_to_peer(handle)
    }
}

impl Connection<Authenticated> {
    /// Receives a handle the peer sent: [`RecvHalf::recv_handle`].
    ///
    /// # Errors
    /// As [`RecvHalf::recv_handle`].
    pub fn recv_handle(&mut self) -> Result<OwnedHandle> {
        self.rx.recv_handle()
    }
}
