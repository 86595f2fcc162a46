use super::*;

const KEY: &[u8] = b"0123456789abcdef-shared";

const TIMEOUTS: Timeouts = Timeouts {
    first_message: Some(Duration::from_secs(1)),
    total: Some(Duration::from_secs(5)),
    after_first: None,
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
            to.on_message(Instant::now(), message);
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
    client.on_message(Instant::now(), &[CHALLENGE, &message].concat());
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
    probe.on_message(Instant::now(), &response);
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
        server.on_message(Instant::now(), &flipped);
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
    strict.on_message(Instant::now(), &message);
    assert_eq!(strict.take_output(), [UNVERIFIABLE_ANSWER]);
    strict.on_message(Instant::now(), FAILURE);
    assert_eq!(strict.status(), &Status::Failed(AuthError::LegacyRefused));

    let mut lenient = machine(Role::Client, KEY, legacy);
    lenient.on_message(Instant::now(), &message);
    assert_eq!(lenient.status(), &Status::InProgress);
    assert_eq!(lenient.take_output()[0], Digest::Md5.mac(KEY, &challenge));

    // A Python 3.11 client answering our challenge with a bare MD5.
    for (policy, ok) in [(AuthPolicy::default(), false), (legacy, true)] {
        let mut server = machine(Role::Server, KEY, policy);
        let ours = server.ours.clone();
        drop(server.take_output());
        server.on_message(Instant::now(), &Digest::Md5.mac(KEY, &ours));
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
    for (name, refusal) in [
        (&b"{md5}"[..], AuthError::LegacyRefused),
        (b"{sha1}", AuthError::DigestRefused("sha1".into())),
        (b"{}", AuthError::DigestRefused(String::new())),
    ] {
        let mut client = machine(Role::Client, KEY, AuthPolicy::default());
        client.on_message(Instant::now(), &[CHALLENGE, name, &[0; NONCE_LEN]].concat());
        assert_eq!(client.take_output(), [UNVERIFIABLE_ANSWER], "{name:?}");
        client.peer_closed();
        assert_eq!(client.status(), &Status::Failed(refusal));
    }

    // Not a challenge we understand: nothing is sent, as CPython sends nothing.
    for bad in [
        &b"sha256}xxxxxxxxxxxxxxxxxxxxxxxxxxxxx"[..],
        b"{sha256xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        b"{sha256}short",
    ] {
        let mut client = machine(Role::Client, KEY, AuthPolicy::default());
        client.on_message(Instant::now(), &[CHALLENGE, bad].concat());
        assert!(matches!(client.status(), Status::Failed(_)), "{bad:?}");
        assert!(client.take_output().is_empty());
    }
}

/// Every way a challenge can be refused, in both roles: the peer gets the
/// same fixed answer (nothing of the key or the challenge), the machine
/// waits for the verdict, and then ends with its own reason whatever the
/// peer does: a verdict of either kind, a close or the deadline.
#[test]
fn a_refused_challenge_gets_an_unverifiable_answer_then_fails_with_its_reason() {
    let md5 = [CHALLENGE, b"{md5}", &[4; NONCE_LEN]].concat();
    let sha1 = [CHALLENGE, b"{sha1}", &[4; NONCE_LEN]].concat();
    let legacy = [CHALLENGE, &[4; LEGACY_CHALLENGE_LEN]].concat();
    let refusals = [
        (&md5, AuthError::LegacyRefused),
        (&sha1, AuthError::DigestRefused("sha1".into())),
        (&legacy, AuthError::LegacyRefused),
    ];
    type End = fn(&mut Handshake, Instant);
    let ends: [(&str, End); 4] = [
        ("#FAILURE#", |hs, now| hs.on_message(now, FAILURE)),
        ("#WELCOME#", |hs, now| hs.on_message(now, WELCOME)),
        ("a close", |hs, _| hs.peer_closed()),
        ("the deadline", |hs, now| {
            hs.handle_timeout(now + Duration::from_secs(60))
        }),
    ];
    for role in [Role::Client, Role::Server] {
        for (challenge, refusal) in &refusals {
            for (end, act) in ends {
                for key in [KEY, b"another key of sixteen"] {
                    let t0 = Instant::now();
                    let mut hs = machine_at(role, key, AuthPolicy::default(), t0, TIMEOUTS);
                    if role == Role::Server {
                        // The client's right answer first; its challenge next.
                        let ours = hs.challenge_message().to_vec();
                        drop(hs.take_output());
                        let mac = Digest::Sha256.mac(key, &ours);
                        hs.on_message(t0, &[b"{sha256}".as_slice(), &mac].concat());
                        assert_eq!(hs.take_output(), [WELCOME]);
                    }
                    hs.on_message(t0, challenge);
                    let what = format!("{role:?} {refusal:?} then {end}");
                    assert_eq!(hs.take_output(), [UNVERIFIABLE_ANSWER], "{what}");
                    assert_eq!(hs.status(), &Status::InProgress, "{what}");
                    assert!(hs.awaiting_verdict(), "{what}");
                    act(&mut hs, t0);
                    assert_eq!(hs.status(), &Status::Failed(refusal.clone()), "{what}");
                    assert!(!hs.wants_message(), "{what}");
                    assert!(hs.take_output().is_empty(), "{what}");
                }
            }
        }
    }
}

#[test]
fn the_unverifiable_answer_is_refused_and_recognised() {
    assert_eq!(UNVERIFIABLE_ANSWER.len(), b"{sha256}".len() + 32);
    assert!(UNVERIFIABLE_ANSWER.starts_with(b"{sha256}"));
    assert!(UNVERIFIABLE_ANSWER[8..].iter().all(|&b| b == 0));
    let mut server = machine(Role::Server, KEY, AuthPolicy::default());
    drop(server.take_output());
    server.on_message(Instant::now(), UNVERIFIABLE_ANSWER);
    assert_eq!(
        server.status(),
        &Status::Failed(AuthError::ChallengeRefused)
    );
    assert_eq!(server.take_output(), [FAILURE]);

    // An mpconn client that refuses a listener's md5 challenge: each side
    // ends with its own reason.
    let md5 = AuthPolicy {
        challenge_digest: Digest::Md5,
        allow_legacy_md5: true,
        ..AuthPolicy::default()
    };
    let mut server = machine(Role::Server, KEY, md5);
    let mut client = machine(Role::Client, KEY, AuthPolicy::default());
    run(&mut server, &mut client);
    assert_eq!(
        server.status(),
        &Status::Failed(AuthError::ChallengeRefused)
    );
    assert_eq!(client.status(), &Status::Failed(AuthError::LegacyRefused));
}

/// A machine that refused its own key from the start computes nothing
/// with a key: its challenge's tag is the empty key's, it refuses any
/// answer with #FAILURE# and any challenge with the fixed answer, and it
/// ends with the refusal.
#[test]
fn a_machine_that_refused_its_key_tells_the_peer_and_ends_with_the_refusal() {
    let t0 = Instant::now();
    let refusal = AuthError::KeyTooShort(5);
    let random = [6; RANDOM_LEN];
    let policy = AuthPolicy::default();
    let mut server =
        Handshake::refusing(Role::Server, refusal.clone(), policy, random, t0, TIMEOUTS);
    let ours = server.challenge_message().to_vec();
    let plain = Handshake::new(
        Role::Server,
        AuthKey::new(b""),
        policy,
        random,
        t0,
        TIMEOUTS,
    );
    assert_eq!(ours, plain.challenge_message(), "the tag of the empty key");
    let challenge = server.take_output();
    assert!(challenge[0].starts_with(b"#CHALLENGE#{sha256}"));
    // Even the empty key's right answer is refused.
    let mac = Digest::Sha256.mac(b"", &ours);
    server.on_message(t0, &[b"{sha256}".as_slice(), &mac].concat());
    assert_eq!(server.take_output(), [FAILURE]);
    assert_eq!(server.status(), &Status::Failed(refusal.clone()));

    let mut client =
        Handshake::refusing(Role::Client, refusal.clone(), policy, random, t0, TIMEOUTS);
    assert!(client.take_output().is_empty());
    client.on_message(t0, &[CHALLENGE, b"{sha256}", &[3; NONCE_LEN]].concat());
    assert_eq!(client.take_output(), [UNVERIFIABLE_ANSWER]);
    client.on_message(t0, FAILURE);
    assert_eq!(client.status(), &Status::Failed(refusal));
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
    client.on_message(Instant::now(), &[b'#'; MAX_MESSAGE + 1]);
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
    server.on_message(
        Instant::now(),
        &[CHALLENGE, b"{sha256}", &[3; NONCE_LEN]].concat(),
    );
    assert!(matches!(server.status(), Status::Failed(_)));
    assert_eq!(server.take_output(), [FAILURE]);
}

#[test]
fn an_ended_machine_wants_nothing_more() {
    let mut server = machine(Role::Server, KEY, AuthPolicy::default());
    let mut client = machine(Role::Client, KEY, AuthPolicy::default());
    run(&mut server, &mut client);
    assert!(!server.wants_message() && !client.wants_message());
    server.on_message(Instant::now(), b"first message");
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
        client.on_message(
            Instant::now(),
            &[CHALLENGE, b"{sha256}", &[3; NONCE_LEN]].concat(),
        );
        drop(client.take_output());
        client.on_message(Instant::now(), verdict);
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
    a.on_message(
        Instant::now(),
        &[CHALLENGE, b"{sha256}", &[3; NONCE_LEN]].concat(),
    );
    let a_challenge = challenge_of(&a);
    let mut b = machine(Role::Client, KEY, AuthPolicy::default());
    b.on_message(Instant::now(), &[CHALLENGE, &a_challenge].concat());
    assert_eq!(b.status(), &Status::Failed(AuthError::Reflected));
    assert!(b.take_output().is_empty(), "no answer leaves B");

    // A listener's challenge, and one without a tag (CPython's), are answered.
    let server = machine(Role::Server, KEY, AuthPolicy::default());
    let mut c = machine(Role::Client, KEY, AuthPolicy::default());
    c.on_message(
        Instant::now(),
        &[CHALLENGE, &challenge_of(&server)].concat(),
    );
    assert_eq!(c.status(), &Status::InProgress);
    let mut d = machine(Role::Client, KEY, AuthPolicy::default());
    d.on_message(
        Instant::now(),
        &[CHALLENGE, b"{sha256}", &[9; NONCE_LEN]].concat(),
    );
    assert_eq!(d.status(), &Status::InProgress);
}

#[test]
fn a_listener_refuses_to_answer_another_listeners_challenge() {
    let other = machine(Role::Server, KEY, AuthPolicy::default());
    let mut server = machine(Role::Server, KEY, AuthPolicy::default());
    let ours = server.challenge_message().to_vec();
    drop(server.take_output());
    let answer = [b"{sha256}".as_slice(), &Digest::Sha256.mac(KEY, &ours)].concat();
    server.on_message(Instant::now(), &answer);
    assert_eq!(server.status(), &Status::InProgress);
    drop(server.take_output());
    server.on_message(Instant::now(), &[CHALLENGE, &challenge_of(&other)].concat());
    assert_eq!(server.status(), &Status::Failed(AuthError::Reflected));
    assert!(
        server.take_output().is_empty(),
        "not even an unverifiable answer"
    );
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
    b.on_message(Instant::now(), &[CHALLENGE, &challenge_of(&a)].concat());
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
        client.on_message(Instant::now(), &message);
    }
    for message in client.take_output() {
        server.on_message(Instant::now(), &message);
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
        first_message: Some(Duration::MAX),
        total: Some(Duration::MAX),
        after_first: Some(Duration::MAX),
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

/// The client's deadlines: none of its own for the server's challenge by
/// default, and the exchange's counted from the challenge's arrival, so a
/// listener that begins late is waited for.
#[test]
fn a_client_waits_for_the_challenge_then_bounds_the_exchange_from_it() {
    let t0 = Instant::now();
    let exchange = Duration::from_millis(300);
    let waits = Timeouts {
        first_message: None,
        total: None,
        after_first: Some(exchange),
    };
    let mut client = machine_at(Role::Client, KEY, AuthPolicy::default(), t0, waits);
    assert_eq!(
        client.poll_timeout(),
        None,
        "no deadline before the challenge"
    );
    client.handle_timeout(t0 + Duration::from_secs(3600));
    assert_eq!(client.status(), &Status::InProgress);
    let late = t0 + Duration::from_secs(10);
    client.on_message(late, &[CHALLENGE, b"{sha256}", &[3; NONCE_LEN]].concat());
    assert_eq!(client.poll_timeout(), Some(late + exchange));
    client.handle_timeout(late + exchange - Duration::from_millis(1));
    assert_eq!(client.status(), &Status::InProgress);
    client.handle_timeout(late + exchange);
    assert_eq!(client.status(), &Status::Failed(AuthError::TimedOut));

    // With a limit on the wait, a silent server is told apart.
    let bounded = Timeouts {
        first_message: Some(Duration::from_secs(2)),
        ..waits
    };
    let mut client = machine_at(Role::Client, KEY, AuthPolicy::default(), t0, bounded);
    assert_eq!(client.poll_timeout(), Some(t0 + Duration::from_secs(2)));
    client.handle_timeout(t0 + Duration::from_secs(2));
    assert_eq!(client.status(), &Status::Failed(AuthError::NoChallenge));
    // A server's silent client is still a plain timeout.
    let mut server = machine_at(Role::Server, KEY, AuthPolicy::default(), t0, bounded);
    server.handle_timeout(t0 + Duration::from_secs(2));
    assert_eq!(server.status(), &Status::Failed(AuthError::TimedOut));
}
