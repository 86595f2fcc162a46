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

/// Moves messages between the two machines until neither has anything to
/// say. Returns the number of one-way trips (batches of messages that
/// crossed).
fn run(server: &mut Handshake, client: &mut Handshake) -> usize {
    fn cross(from: &mut Handshake, to: &mut Handshake) -> bool {
        let out = from.take_output();
        for message in &out {
            to.on_message(message);
        }
        !out.is_empty()
    }
    let mut trips = 0;
    loop {
        let a = cross(server, client);
        let b = cross(client, server);
        if !a && !b {
            return trips;
        }
        trips += usize::from(a) + usize::from(b);
    }
}

#[test]
fn same_key_succeeds_in_four_trips() {
    let mut server = machine(Role::Server, KEY, AuthPolicy::default());
    let mut client = machine(Role::Client, KEY, AuthPolicy::default());
    let trips = run(&mut server, &mut client);
    assert_eq!(server.status(), &Status::Done);
    assert_eq!(client.status(), &Status::Done);
    assert_eq!(trips, 4);
}

#[test]
fn different_keys_fail_on_both_sides() {
    let mut server = machine(Role::Server, KEY, AuthPolicy::default());
    let mut client = machine(
        Role::Client,
        b"another key of sixteen",
        AuthPolicy::default(),
    );
    run(&mut server, &mut client);
    assert_eq!(server.status(), &Status::Failed(AuthError::WrongDigest));
    assert_eq!(client.status(), &Status::Failed(AuthError::Rejected));
}

#[test]
fn server_challenge_has_cpython_shape() {
    let mut server = machine(Role::Server, KEY, AuthPolicy::default());
    let out = server.take_output();
    assert_eq!(out.len(), 1);
    let payload = &out[0];
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
    client.on_message(&[CHALLENGE, &message].concat());
    let expected = [b"{sha256}".as_slice(), &Digest::Sha256.mac(KEY, &message)].concat();
    let out = client.take_output();
    assert_eq!(out[0], expected);
    // ...followed at once by its own challenge.
    let len = CHALLENGE.len() + "{sha256}".len() + NONCE_LEN;
    assert!(out[1].starts_with(b"#CHALLENGE#{sha256}"));
    assert_eq!(out[1].len(), len);
    assert_eq!(out.len(), 2);
}

#[test]
fn every_single_bit_flip_of_a_valid_response_is_rejected() {
    let mut probe = machine(Role::Server, KEY, AuthPolicy::default());
    let challenge = probe.challenge_message().to_vec();
    drop(probe.take_output());
    let response = [b"{sha256}".as_slice(), &Digest::Sha256.mac(KEY, &challenge)].concat();
    probe.on_message(&response);
    assert_eq!(
        probe.status(),
        &Status::InProgress,
        "the unflipped response passes"
    );
    for bit in 0..response.len() * 8 {
        let mut server = machine(Role::Server, KEY, AuthPolicy::default());
        drop(server.take_output());
        let mut flipped = response.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        server.on_message(&flipped);
        assert!(matches!(server.status(), Status::Failed(_)), "bit {bit}");
        assert_eq!(server.take_output(), [FAILURE], "bit {bit}");
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
    let message = [CHALLENGE, &challenge].concat();

    let mut strict = machine(Role::Client, KEY, AuthPolicy::default());
    strict.on_message(&message);
    assert_eq!(strict.status(), &Status::Failed(AuthError::LegacyRefused));
    assert!(strict.take_output().is_empty());

    let mut lenient = machine(Role::Client, KEY, legacy);
    lenient.on_message(&message);
    assert_eq!(lenient.status(), &Status::InProgress);
    assert_eq!(lenient.take_output()[0], Digest::Md5.mac(KEY, &challenge));

    // A Python 3.11 client answering our challenge with a bare MD5.
    for (policy, ok) in [(AuthPolicy::default(), false), (legacy, true)] {
        let mut server = machine(Role::Server, KEY, policy);
        let ours = server.ours.clone();
        drop(server.take_output());
        server.on_message(&Digest::Md5.mac(KEY, &ours));
        if ok {
            assert_eq!(server.status(), &Status::InProgress);
            assert_eq!(server.take_output(), [WELCOME]);
        } else {
            assert_eq!(server.status(), &Status::Failed(AuthError::LegacyRefused));
            assert_eq!(server.take_output(), [FAILURE]);
        }
    }
}

#[test]
fn named_md5_and_unknown_digests_are_refused() {
    let mut client = machine(Role::Client, KEY, AuthPolicy::default());
    client.on_message(&[CHALLENGE, b"{md5}", &[0; NONCE_LEN]].concat());
    assert_eq!(client.status(), &Status::Failed(AuthError::LegacyRefused));

    let mut client = machine(Role::Client, KEY, AuthPolicy::default());
    client.on_message(&[CHALLENGE, b"{sha1}", &[0; NONCE_LEN]].concat());
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
        client.on_message(&[CHALLENGE, bad].concat());
        assert!(matches!(client.status(), Status::Failed(_)), "{bad:?}");
        assert!(client.take_output().is_empty());
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
        run(&mut server, &mut client);
        assert_eq!(server.status(), &Status::Done, "{digest:?}");
        assert_eq!(client.status(), &Status::Done, "{digest:?}");
    }
}

#[test]
fn oversized_handshake_messages_are_refused() {
    let mut client = machine(Role::Client, KEY, AuthPolicy::default());
    client.on_message(&[b'#'; MAX_MESSAGE + 1]);
    assert_eq!(
        client.status(),
        &Status::Failed(AuthError::MessageTooLarge(MAX_MESSAGE as u64 + 1))
    );
    assert!(!client.wants_message());
}

#[test]
fn a_client_challenge_instead_of_a_response_fails() {
    let mut server = machine(Role::Server, KEY, AuthPolicy::default());
    drop(server.take_output());
    server.on_message(&[CHALLENGE, b"{sha256}", &[3; NONCE_LEN]].concat());
    assert!(matches!(server.status(), Status::Failed(_)));
    assert_eq!(server.take_output(), [FAILURE]);
}

#[test]
fn an_ended_machine_wants_nothing_more() {
    let mut server = machine(Role::Server, KEY, AuthPolicy::default());
    let mut client = machine(Role::Client, KEY, AuthPolicy::default());
    run(&mut server, &mut client);
    assert!(!server.wants_message() && !client.wants_message());
    server.on_message(b"first message");
    assert_eq!(server.status(), &Status::Done);
    assert!(server.take_output().is_empty());
}

#[test]
fn a_peer_that_closes_before_the_end_fails_the_handshake() {
    let mut client = machine(Role::Client, KEY, AuthPolicy::default());
    client.peer_closed();
    assert_eq!(client.status(), &Status::Failed(AuthError::PeerClosed));
    let mut server = machine(Role::Server, KEY, AuthPolicy::default());
    let mut done = machine(Role::Client, KEY, AuthPolicy::default());
    run(&mut server, &mut done);
    server.peer_closed();
    assert_eq!(
        server.status(),
        &Status::Done,
        "closing after the end is fine"
    );
}

#[test]
fn a_verdict_other_than_welcome_is_a_rejection() {
    for verdict in [&b"#FAILURE#"[..], b"#WELCOME", b"#WELCOME#!", b""] {
        let mut client = machine(Role::Client, KEY, AuthPolicy::default());
        client.on_message(&[CHALLENGE, b"{sha256}", &[3; NONCE_LEN]].concat());
        drop(client.take_output());
        client.on_message(verdict);
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
    a.on_message(&[CHALLENGE, b"{sha256}", &[3; NONCE_LEN]].concat());
    let a_challenge = challenge_of(&a);
    let mut b = machine(Role::Client, KEY, AuthPolicy::default());
    b.on_message(&[CHALLENGE, &a_challenge].concat());
    assert_eq!(b.status(), &Status::Failed(AuthError::Reflected));
    assert!(b.take_output().is_empty(), "no answer leaves B");

    // A listener's challenge, and one without a tag (CPython's), are answered.
    let server = machine(Role::Server, KEY, AuthPolicy::default());
    let mut c = machine(Role::Client, KEY, AuthPolicy::default());
    c.on_message(&[CHALLENGE, &challenge_of(&server)].concat());
    assert_eq!(c.status(), &Status::InProgress);
    let mut d = machine(Role::Client, KEY, AuthPolicy::default());
    d.on_message(&[CHALLENGE, b"{sha256}", &[9; NONCE_LEN]].concat());
    assert_eq!(d.status(), &Status::InProgress);
}

#[test]
fn a_listener_refuses_to_answer_another_listeners_challenge() {
    let other = machine(Role::Server, KEY, AuthPolicy::default());
    let mut server = machine(Role::Server, KEY, AuthPolicy::default());
    let ours = server.challenge_message().to_vec();
    drop(server.take_output());
    let answer = [b"{sha256}".as_slice(), &Digest::Sha256.mac(KEY, &ours)].concat();
    server.on_message(&answer);
    assert_eq!(server.status(), &Status::InProgress);
    drop(server.take_output());
    server.on_message(&[CHALLENGE, &challenge_of(&other)].concat());
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
    b.on_message(&[CHALLENGE, &challenge_of(&a)].concat());
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
    for message in server.take_output() {
        client.on_message(&message);
    }
    for message in client.take_output() {
        server.on_message(&message);
    }
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
