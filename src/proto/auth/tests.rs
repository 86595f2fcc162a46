use super::*;

const KEY: &[u8] = b"0123456789abcdef-shared";

const TIMEOUTS: Timeouts = Timeouts {
    total: Duration::from_secs(5),
    first_message: Some(Duration::from_secs(1)),
};

fn machine(role: Role, key: &[u8], policy: AuthPolicy) -> Handshake {
    machine_at(role, key, policy, Instant::now(), TIMEOUTS)
}

fn machine_at(
    role: Role,
    key: &[u8],
    policy: AuthPolicy,
    now: Instant,
    timeouts: Timeouts,
) -> Handshake {
    let random = match role {
        Role::Server => [1; RANDOM_LEN],
        Role::Client => [2; RANDOM_LEN],
    };
    Handshake::new(role, AuthKey::new(key), policy, random, now, timeouts)
}

/// Moves bytes between the two machines, in chunks of `chunk`, until neither
/// has anything to say. Returns the number of one-way trips (batches of
/// output that crossed).
fn run(server: &mut Handshake, client: &mut Handshake, chunk: usize) -> usize {
    fn cross(from: &mut Handshake, to: &mut Handshake, chunk: usize) -> bool {
        let out = from.output().to_vec();
        from.consume_output(out.len());
        for piece in out.chunks(chunk) {
            to.feed(piece);
        }
        !out.is_empty()
    }
    let mut trips = 0;
    loop {
        let a = cross(server, client, chunk);
        let b = cross(client, server, chunk);
        if !a && !b {
            return trips;
        }
        trips += usize::from(a) + usize::from(b);
    }
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

#[test]
fn same_key_succeeds_in_four_trips_at_any_chunking() {
    for chunk in [1, 2, 3, 7, 64, 4096] {
        let mut server = machine(Role::Server, KEY, AuthPolicy::default());
        let mut client = machine(Role::Client, KEY, AuthPolicy::default());
        let trips = run(&mut server, &mut client, chunk);
        assert_eq!(server.status(), &Status::Done, "chunk {chunk}");
        assert_eq!(client.status(), &Status::Done, "chunk {chunk}");
        assert_eq!(trips, 4, "chunk {chunk}");
    }
}

#[test]
fn different_keys_fail_on_both_sides() {
    let mut server = machine(Role::Server, KEY, AuthPolicy::default());
    let mut client = machine(
        Role::Client,
        b"another key of sixteen",
        AuthPolicy::default(),
    );
    run(&mut server, &mut client, 4096);
    assert_eq!(server.status(), &Status::Failed(AuthError::WrongDigest));
    assert_eq!(client.status(), &Status::Failed(AuthError::Rejected));
}

#[test]
fn server_challenge_has_cpython_shape() {
    let server = machine(Role::Server, KEY, AuthPolicy::default());
    let out = server.output();
    let payload = &out[4..];
    assert_eq!(&out[..4], &(payload.len() as u32).to_be_bytes());
    assert!(payload.starts_with(b"#CHALLENGE#{sha256}"));
    assert_eq!(
        payload.len(),
        CHALLENGE.len() + "{sha256}".len() + NONCE_LEN
    );
}

#[test]
fn client_answers_with_the_hmac_over_the_whole_message() {
    let mut client = machine(Role::Client, KEY, AuthPolicy::default());
    let message = [b"{sha256}".as_slice(), &[9; NONCE_LEN]].concat();
    client.feed(&frame(&[CHALLENGE, &message].concat()));
    let expected = [b"{sha256}".as_slice(), &Digest::Sha256.mac(KEY, &message)].concat();
    assert!(client.output().starts_with(&frame(&expected)));
    // ...followed at once by its own challenge.
    let second = &client.output()[4 + expected.len()..];
    let len = CHALLENGE.len() + "{sha256}".len() + NONCE_LEN;
    assert_eq!(&second[..4], &(len as u32).to_be_bytes());
    assert!(second[4..].starts_with(b"#CHALLENGE#{sha256}"));
    assert_eq!(second.len(), 4 + len);
}

#[test]
fn every_single_bit_flip_of_a_valid_response_is_rejected() {
    let mut probe = machine(Role::Server, KEY, AuthPolicy::default());
    let challenge = probe.output()[4 + CHALLENGE.len()..].to_vec();
    probe.consume_output(usize::MAX);
    let response = [b"{sha256}".as_slice(), &Digest::Sha256.mac(KEY, &challenge)].concat();
    probe.feed(&frame(&response));
    assert_eq!(
        probe.status(),
        &Status::InProgress,
        "the unflipped response passes"
    );
    for bit in 0..response.len() * 8 {
        let mut server = machine(Role::Server, KEY, AuthPolicy::default());
        server.consume_output(usize::MAX);
        let mut flipped = response.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        server.feed(&frame(&flipped));
        assert!(matches!(server.status(), Status::Failed(_)), "bit {bit}");
        assert_eq!(server.output(), frame(FAILURE), "bit {bit}");
    }
}

#[test]
fn legacy_md5_is_refused_by_default_and_accepted_when_allowed() {
    let legacy = AuthPolicy {
        allow_legacy_md5: true,
        ..AuthPolicy::default()
    };
    // A Python 3.11 server: 20-byte challenge, bare MD5 answer expected.
    let challenge = [5u8; LEGACY_CHALLENGE_LEN];
    let message = frame(&[CHALLENGE, &challenge].concat());

    let mut strict = machine(Role::Client, KEY, AuthPolicy::default());
    strict.feed(&message);
    assert_eq!(strict.status(), &Status::Failed(AuthError::LegacyRefused));
    assert!(strict.output().is_empty());

    let mut lenient = machine(Role::Client, KEY, legacy);
    lenient.feed(&message);
    assert_eq!(lenient.status(), &Status::InProgress);
    assert!(
        lenient
            .output()
            .starts_with(&frame(&Digest::Md5.mac(KEY, &challenge)))
    );

    // A Python 3.11 client answering our challenge with a bare MD5.
    for (policy, ok) in [(AuthPolicy::default(), false), (legacy, true)] {
        let mut server = machine(Role::Server, KEY, policy);
        let ours = server.ours.clone();
        server.consume_output(usize::MAX);
        server.feed(&frame(&Digest::Md5.mac(KEY, &ours)));
        if ok {
            assert_eq!(server.status(), &Status::InProgress);
            assert_eq!(server.output(), frame(WELCOME));
        } else {
            assert_eq!(server.status(), &Status::Failed(AuthError::LegacyRefused));
            assert_eq!(server.output(), frame(FAILURE));
        }
    }
}

#[test]
fn named_md5_and_unknown_digests_are_refused() {
    let mut client = machine(Role::Client, KEY, AuthPolicy::default());
    client.feed(&frame(&[CHALLENGE, b"{md5}", &[0; NONCE_LEN]].concat()));
    assert_eq!(client.status(), &Status::Failed(AuthError::LegacyRefused));

    let mut client = machine(Role::Client, KEY, AuthPolicy::default());
    client.feed(&frame(&[CHALLENGE, b"{sha1}", &[0; NONCE_LEN]].concat()));
    assert_eq!(
        client.status(),
        &Status::Failed(AuthError::DigestRefused("sha1".into()))
    );

    for bad in [
        &b"sha256}xxxxxxxxxxxxxxxxxxxxxxxxxxxxx"[..],
        b"{sha256xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        b"{}xxxxxxxxxxxxxxxxxxxxxxxxxxx",
    ] {
        let mut client = machine(Role::Client, KEY, AuthPolicy::default());
        client.feed(&frame(&[CHALLENGE, bad].concat()));
        assert!(matches!(client.status(), Status::Failed(_)), "{bad:?}");
        assert!(client.output().is_empty());
    }
}

#[test]
fn stronger_digests_are_answered_in_kind() {
    for digest in [Digest::Sha384, Digest::Sha3_256, Digest::Sha3_384] {
        let policy = AuthPolicy {
            challenge_digest: digest,
            ..AuthPolicy::default()
        };
        let mut server = machine(Role::Server, KEY, policy);
        let mut client = machine(Role::Client, KEY, AuthPolicy::default());
        run(&mut server, &mut client, 4096);
        assert_eq!(server.status(), &Status::Done, "{digest:?}");
        assert_eq!(client.status(), &Status::Done, "{digest:?}");
    }
}

#[test]
fn oversized_handshake_messages_are_refused_from_the_header() {
    let mut client = machine(Role::Client, KEY, AuthPolicy::default());
    let used = client.feed(&257u32.to_be_bytes());
    assert_eq!(used, 4);
    assert_eq!(
        client.status(),
        &Status::Failed(AuthError::MessageTooLarge(257))
    );
    assert_eq!(client.wants(), 0);

    // An extended length beyond i64::MAX is a message too large, not a
    // negative one.
    let mut client = machine(Role::Client, KEY, AuthPolicy::default());
    client.feed(&[0xff; 12]);
    assert_eq!(
        client.status(),
        &Status::Failed(AuthError::MessageTooLarge(u64::MAX))
    );
    let mut client = machine(Role::Client, KEY, AuthPolicy::default());
    client.feed(&(-5i32).to_be_bytes());
    assert!(matches!(
        client.status(),
        Status::Failed(AuthError::Malformed(_))
    ));
}

#[test]
fn a_client_challenge_instead_of_a_response_fails() {
    let mut server = machine(Role::Server, KEY, AuthPolicy::default());
    server.consume_output(usize::MAX);
    server.feed(&frame(&[CHALLENGE, b"{sha256}", &[3; NONCE_LEN]].concat()));
    assert!(matches!(server.status(), Status::Failed(_)));
    assert_eq!(server.output(), frame(FAILURE));
}

#[test]
fn the_machine_never_reads_past_the_handshake() {
    let mut server = machine(Role::Server, KEY, AuthPolicy::default());
    let mut client = machine(Role::Client, KEY, AuthPolicy::default());
    // Run until the client's final #WELCOME# is queued, then glue a message behind it.
    let out = server.output().to_vec();
    server.consume_output(out.len());
    client.feed(&out);
    let out = client.output().to_vec();
    client.consume_output(out.len());
    server.feed(&out);
    let out = server.output().to_vec();
    server.consume_output(out.len());
    client.feed(&out);
    assert_eq!(client.status(), &Status::Done);
    let mut tail = client.output().to_vec();
    let welcome_len = tail.len();
    tail.extend_from_slice(&frame(b"first message"));
    assert_eq!(server.feed(&tail), welcome_len);
    assert_eq!(server.status(), &Status::Done);
    assert_eq!(server.wants(), 0);
}

#[test]
fn truncation_at_every_offset_waits_then_peer_close_fails() {
    let mut server = machine(Role::Server, KEY, AuthPolicy::default());
    let challenge = server.output().to_vec();
    for cut in 0..challenge.len() {
        let mut client = machine(Role::Client, KEY, AuthPolicy::default());
        client.feed(&challenge[..cut]);
        assert_eq!(client.status(), &Status::InProgress, "cut {cut}");
        assert!(client.wants() > 0);
        client.peer_closed();
        assert_eq!(client.status(), &Status::Failed(AuthError::PeerClosed));
    }
    server.peer_closed();
    assert_eq!(server.status(), &Status::Failed(AuthError::PeerClosed));
}

#[test]
fn a_verdict_other_than_welcome_is_a_rejection() {
    for verdict in [&b"#FAILURE#"[..], b"#WELCOME", b"#WELCOME#!", b""] {
        let mut client = machine(Role::Client, KEY, AuthPolicy::default());
        client.feed(&frame(&[CHALLENGE, b"{sha256}", &[3; NONCE_LEN]].concat()));
        client.consume_output(usize::MAX);
        client.feed(&frame(verdict));
        assert_eq!(
            client.status(),
            &Status::Failed(AuthError::Rejected),
            "{verdict:?}"
        );
    }
}

/// The challenge a machine delivers, without the `#CHALLENGE#` prefix.
fn challenge_of(hs: &Handshake) -> Vec<u8> {
    hs.challenge_message().to_vec()
}

#[test]
fn a_client_refuses_to_answer_another_clients_challenge() {
    // Client A answers a rogue's challenge and sends its own, which the
    // rogue forwards to client B as if it were a listener's.
    let mut a = machine(Role::Client, KEY, AuthPolicy::default());
    a.feed(&frame(&[CHALLENGE, b"{sha256}", &[3; NONCE_LEN]].concat()));
    let a_challenge = challenge_of(&a);
    let mut b = machine(Role::Client, KEY, AuthPolicy::default());
    b.feed(&frame(&[CHALLENGE, &a_challenge].concat()));
    assert_eq!(b.status(), &Status::Failed(AuthError::Reflected));
    assert!(b.output().is_empty(), "no answer leaves B");

    // A listener's challenge, and one without a tag (CPython's), are answered.
    let server = machine(Role::Server, KEY, AuthPolicy::default());
    let mut c = machine(Role::Client, KEY, AuthPolicy::default());
    c.feed(&frame(&[CHALLENGE, &challenge_of(&server)].concat()));
    assert_eq!(c.status(), &Status::InProgress);
    let mut d = machine(Role::Client, KEY, AuthPolicy::default());
    d.feed(&frame(&[CHALLENGE, b"{sha256}", &[9; NONCE_LEN]].concat()));
    assert_eq!(d.status(), &Status::InProgress);
}

#[test]
fn a_listener_refuses_to_answer_another_listeners_challenge() {
    let other = machine(Role::Server, KEY, AuthPolicy::default());
    let mut server = machine(Role::Server, KEY, AuthPolicy::default());
    let ours = server.challenge_message().to_vec();
    server.consume_output(usize::MAX);
    let answer = [b"{sha256}".as_slice(), &Digest::Sha256.mac(KEY, &ours)].concat();
    server.feed(&frame(&answer));
    assert_eq!(server.status(), &Status::InProgress);
    server.consume_output(usize::MAX);
    server.feed(&frame(&[CHALLENGE, &challenge_of(&other)].concat()));
    assert_eq!(server.status(), &Status::Failed(AuthError::Reflected));
}

#[test]
fn role_tags_depend_on_the_key_and_the_random_bytes() {
    let a = machine(Role::Client, KEY, AuthPolicy::default());
    let b = machine(
        Role::Client,
        b"another key of sixteen",
        AuthPolicy::default(),
    );
    assert_ne!(challenge_of(&a), challenge_of(&b));
    // With another key the tag is not ours: B answers A's challenge (and
    // the answer is worthless to anyone holding A's key).
    let mut b = machine(
        Role::Client,
        b"another key of sixteen",
        AuthPolicy::default(),
    );
    b.feed(&frame(&[CHALLENGE, &challenge_of(&a)].concat()));
    assert_eq!(b.status(), &Status::InProgress);
    let nonce = &challenge_of(&a)["{sha256}".len()..];
    assert_eq!(nonce.len(), NONCE_LEN);
    assert_eq!(&nonce[..RANDOM_LEN], &[2; RANDOM_LEN]);
}

#[test]
fn a_silent_peer_fails_at_the_first_message_deadline() {
    let t0 = Instant::now();
    let mut server = machine_at(Role::Server, KEY, AuthPolicy::default(), t0, TIMEOUTS);
    assert_eq!(server.poll_timeout(), Some(t0 + Duration::from_secs(1)));
    server.handle_timeout(t0 + Duration::from_millis(999));
    assert_eq!(server.status(), &Status::InProgress);
    server.handle_timeout(t0 + Duration::from_secs(1));
    assert_eq!(server.status(), &Status::Failed(AuthError::TimedOut));
    assert_eq!(
        server.poll_timeout(),
        None,
        "an ended machine needs no time"
    );
}

#[test]
fn the_first_message_lifts_the_short_deadline() {
    let t0 = Instant::now();
    let mut server = machine_at(Role::Server, KEY, AuthPolicy::default(), t0, TIMEOUTS);
    let mut client = machine_at(Role::Client, KEY, AuthPolicy::default(), t0, TIMEOUTS);
    let out = server.output().to_vec();
    server.consume_output(out.len());
    client.feed(&out);
    let out = client.output().to_vec();
    client.consume_output(out.len());
    server.feed(&out);
    // The client's answer, and its challenge right behind it.
    assert_eq!(server.messages_received(), 2);
    assert_eq!(server.status(), &Status::InProgress);
    assert_eq!(server.poll_timeout(), Some(t0 + Duration::from_secs(5)));
    server.handle_timeout(t0 + Duration::from_secs(4));
    assert_eq!(server.status(), &Status::InProgress);
    server.handle_timeout(t0 + Duration::from_secs(5));
    assert_eq!(server.status(), &Status::Failed(AuthError::TimedOut));
}

#[test]
fn durations_beyond_an_instant_mean_no_deadline() {
    let forever = Timeouts {
        total: Duration::MAX,
        first_message: Some(Duration::MAX),
    };
    let mut server = machine_at(
        Role::Server,
        KEY,
        AuthPolicy::default(),
        Instant::now(),
        forever,
    );
    assert_eq!(server.poll_timeout(), None);
    server.handle_timeout(Instant::now() + Duration::from_secs(86_400 * 365));
    assert_eq!(server.status(), &Status::InProgress);
}
