//! The upgrade of an unverified connection by handshake: the only way,
//! besides `pipe()` and the `dangerous_` call, to a `Connection<Authenticated>`.

use std::time::Instant;

use super::{Authenticated, Connection, Unverified};
use crate::error::Result;
use crate::handshake::{Exchange, HandshakeOptions};
use crate::key::AuthKey;
use crate::proto::auth::Role;

impl Connection<Unverified> {
    /// Runs a whole handshake in `role` over this blocking connection,
    /// reading through the connection's own reader: what it had already
    /// read goes to the handshake first, and what the peer sent behind the
    /// handshake stays, to be received as messages.
    pub(crate) fn authenticate(
        mut self,
        opts: &HandshakeOptions,
        role: Role,
        key: &AuthKey,
    ) -> Result<Connection<Authenticated>> {
        let mut exchange = Exchange::new(opts.start(role, key, Instant::now())?);
        let proof = self.receiver().handshake(&mut exchange)?;
        Ok(self.prove(proof))
    }
}
