//! The upgrade of an unverified connection by handshake: the only way,
//! besides `pipe()` and the `dangerous_` call, to a `Connection<Authenticated>`.

use std::time::Instant;

use super::{Authenticated, Connection, Unverified};
use crate::error::Result;
use crate::handshake::{HandshakeOptions, READ_AHEAD, drive_blocking};
use crate::key::AuthKey;
use crate::proto::auth::Role;

impl Connection<Unverified> {
    /// Runs a whole handshake in `role` over this blocking connection.
    /// Bytes the connection had already read go to the machine first; bytes
    /// read past the handshake go back to the connection, to be received
    /// as messages.
    pub(crate) fn authenticate(
        mut self,
        opts: &HandshakeOptions,
        role: Role,
        key: &AuthKey,
    ) -> Result<Connection<Authenticated>> {
        let mut hs = opts.start(role, key, Instant::now())?;
        let mut early = Vec::new();
        let rx = self.receiver()?;
        let mut buffered = [0u8; READ_AHEAD];
        loop {
            let n = rx.reader_mut().take_buffered(&mut buffered);
            if n == 0 {
                break;
            }
            let used = hs.feed(&buffered[..n]);
            early.extend_from_slice(&buffered[used..n]);
        }
        // Handshake messages are small: a peer that sends a large one must
        // not make a named pipe buffer it.
        let max = rx.max_message();
        let endpoint = self.endpoint();
        endpoint.stream().set_read_limit(READ_AHEAD as u64);
        let result = drive_blocking(endpoint, &mut hs, &mut early);
        endpoint.stream().set_read_limit(max);
        let proof = result?;
        self.receiver()?.reader_mut().unread(&early);
        Ok(self.prove(proof))
    }
}
