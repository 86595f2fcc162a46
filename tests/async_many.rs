//! A thousand authenticated connections at once on one async listener: on
//! a multi-threaded tokio runtime over TCP, and on async-io over a Unix
//! socket. Every client holds its connection open until all of them are
//! connected, then streams checksummed messages of varied sizes (some past
//! 64 KiB) while it receives their echoes; the server checks each message
//! and its place before echoing it. Nothing may be lost, repeated, cut,
//! corrupted or reordered, and the listener must count every client.
//! Then a valid client behind a burst of idle connections larger than the
//! listener engine's event buffer, on both runtimes.

#![cfg(all(unix, any(feature = "tokio", feature = "async-io")))]

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::{CHECKSUMMED_HEADER, KEY, check_message, checksummed, watchdog};
use futures_util::future::join;
use mpconn::aio::{Client, Connection, Listener, Runtime};
use mpconn::{Address, ClientOptions, Error, ListenerOptions};

const CLIENTS: usize = 1000;
const MESSAGES: u32 = 16;

/// The two runs take turns: together they would need twice the
/// descriptors and measure the machine.
static ONE_RUN_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The payload size of message `seq` of client `client`: up to 4 KiB, but
/// one message of every other client is past 64 KiB (up to 160 KiB), and
/// one of every 250th is 8 MiB and more, which no socket takes in one
/// write (TCP on loopback takes a few MiB).
fn size(client: u32, seq: u32) -> usize {
    let r = (u64::from(client) << 32 | u64::from(seq)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
    if client.is_multiple_of(250) && seq == 1 {
        8 * 1024 * 1024 + r as usize % 4096
    } else if client.is_multiple_of(2) && seq == client / 2 % MESSAGES {
        64 * 1024 + 1 + r as usize % (96 * 1024)
    } else {
        r as usize % 4096
    }
}

/// Room for every handshake at once, and deadlines no busy machine
/// reaches: the test is about a thousand connections served side by side,
/// not about the admission policy under a flood (`tests/flood.rs`), which
/// would drop a client whose own process is too busy to answer in time.
fn listener_options() -> ListenerOptions {
    ListenerOptions::new()
        .max_pending_handshakes(2 * CLIENTS)
        .first_answer_timeout(Duration::from_secs(60))
        .handshake_timeout(Duration::from_secs(60))
        .accept_timeout(Some(Duration::from_secs(60)))
}

fn client_options() -> ClientOptions {
    ClientOptions::new().handshake_timeout(Duration::from_secs(60))
}

/// The server's side of one connection: every message must be the next of
/// one client's, intact; each is echoed. Returns how many came.
async fn echo<R: Runtime>(mut conn: Connection<R>) -> Result<u32, String> {
    let mut client = None;
    let mut next = 0;
    loop {
        let message = match conn.recv_bytes().await {
            Ok(m) => m,
            Err(Error::Eof) => return Ok(next),
            Err(e) => return Err(format!("server, after {next} messages: {e}")),
        };
        let (stream, seq) = check_message(&message)?;
        if *client.get_or_insert(stream) != stream || seq != next {
            return Err(format!(
                "server: message {seq} of client {stream} where message {next} of {client:?} was due"
            ));
        }
        next += 1;
        conn.send_bytes(&message)
            .await
            .map_err(|e| format!("server, client {stream}: {e}"))?;
    }
}

/// One client: connects, waits until every client is connected, then sends
/// its messages while it receives their echoes.
async fn client<R: Runtime>(
    address: Address,
    id: u32,
    all_connected: &tokio::sync::Barrier,
) -> Result<(), String> {
    let connected = Client::<R>::connect_with(&client_options(), &address, KEY).await;
    // Wait even after a failure, so that the others are not left waiting.
    all_connected.wait().await;
    let conn = connected.map_err(|e| format!("client {id}: connect: {e}"))?;
    let (mut tx, mut rx) = conn.split();
    let send = async {
        for seq in 0..MESSAGES {
            tx.send_bytes(&checksummed(id, seq, size(id, seq)))
                .await
                .map_err(|e| format!("client {id}: sending {seq}: {e}"))?;
        }
        Ok::<_, String>(())
    };
    let receive = async {
        for seq in 0..MESSAGES {
            let echo = rx
                .recv_bytes()
                .await
                .map_err(|e| format!("client {id}: receiving {seq}: {e}"))?;
            if check_message(&echo)? != (id, seq)
                || echo.len() != CHECKSUMMED_HEADER + size(id, seq)
            {
                return Err(format!("client {id}: echo {seq} is another message"));
            }
        }
        Ok(())
    };
    let (sent, received) = join(send, receive).await;
    sent.and(received)
}

fn assert_all_served(results: Vec<Result<(), String>>, served: Vec<Result<u32, String>>) {
    let failures: Vec<String> = results
        .into_iter()
        .chain(
            served
                .into_iter()
                .map(|r| r.map(|n| assert_eq!(n, MESSAGES))),
        )
        .filter_map(Result::err)
        .collect();
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures[..failures.len().min(20)].join("\n")
    );
}

#[cfg(feature = "tokio")]
#[test]
fn a_thousand_clients_at_once_on_a_multi_threaded_tokio_runtime() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _w = watchdog(120);
    common::raise_descriptor_limit(2 * CLIENTS + 256);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = std::sync::Arc::new(
            mpconn::tokio::Listener::bind_with(listener_options(), "127.0.0.1:0", KEY).unwrap(),
        );
        let address = listener.address().clone();
        let server = {
            let listener = listener.clone();
            tokio::spawn(async move {
                let mut serving = Vec::new();
                for _ in 0..CLIENTS {
                    let conn = listener.accept().await.map_err(|e| e.to_string())?;
                    serving.push(tokio::spawn(echo(conn)));
                }
                let mut served = Vec::new();
                for s in serving {
                    served.push(s.await.map_err(|e| e.to_string())?);
                }
                Ok::<_, String>(served)
            })
        };
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(CLIENTS));
        let clients: Vec<_> = (0..CLIENTS as u32)
            .map(|id| {
                let (address, barrier) = (address.clone(), barrier.clone());
                tokio::spawn(
                    async move { client::<mpconn::tokio::Tokio>(address, id, &barrier).await },
                )
            })
            .collect();
        let mut results = Vec::new();
        for c in clients {
            results.push(c.await.unwrap());
        }
        let served = server.await.unwrap().unwrap();
        assert_all_served(results, served);
        let stats = listener.stats();
        assert_eq!(
            (stats.accepted, stats.failed_handshakes),
            (CLIENTS as u64, 0)
        );
    });
}

/// Accepts `CLIENTS` connections and serves them all on this task: a
/// runtime without a spawner (async-io's `block_on`) still serves them side
/// by side.
#[cfg(feature = "async-io")]
async fn serve_all<R: Runtime>(listener: &Listener<R>) -> Result<Vec<Result<u32, String>>, String> {
    use futures_util::StreamExt;
    use futures_util::stream::FuturesUnordered;
    use std::future::{Future, poll_fn};
    use std::pin::Pin;
    use std::task::Poll;
    type Accept<'a, R> = Pin<Box<dyn Future<Output = mpconn::Result<Connection<R>>> + 'a>>;
    let mut serving = FuturesUnordered::new();
    let mut served = Vec::new();
    let mut accepted = 0;
    let mut accepting: Option<Accept<'_, R>> = Some(Box::pin(listener.accept()));
    poll_fn(|cx| {
        while let Some(accept) = accepting.as_mut() {
            let Poll::Ready(conn) = accept.as_mut().poll(cx) else {
                break;
            };
            let conn = conn.map_err(|e| format!("accept {accepted}: {e}"))?;
            serving.push(echo(conn));
            accepted += 1;
            accepting = (accepted < CLIENTS).then(|| Box::pin(listener.accept()) as Accept<'_, R>);
        }
        while let Poll::Ready(Some(result)) = serving.poll_next_unpin(cx) {
            served.push(result);
        }
        match accepting.is_none() && serving.is_empty() {
            true => Poll::Ready(Ok::<_, String>(())),
            false => Poll::Pending,
        }
    })
    .await?;
    Ok(served)
}

#[cfg(feature = "async-io")]
#[test]
fn a_thousand_clients_at_once_on_async_io() {
    use futures_util::StreamExt;
    use futures_util::stream::FuturesUnordered;
    use mpconn::async_io::AsyncIo;
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _w = watchdog(120);
    common::raise_descriptor_limit(2 * CLIENTS + 256);
    let address = Address::Unix(common::unique_path("many"));
    let listener = Listener::<AsyncIo>::bind_with(listener_options(), &address, KEY).unwrap();
    let barrier = tokio::sync::Barrier::new(CLIENTS);
    let clients: FuturesUnordered<_> = (0..CLIENTS as u32)
        .map(|id| client::<AsyncIo>(address.clone(), id, &barrier))
        .collect();
    let (results, served) =
        async_io::block_on(join(clients.collect::<Vec<_>>(), serve_all(&listener)));
    assert_all_served(results, served.unwrap());
    let stats = listener.stats();
    assert_eq!(
        (stats.accepted, stats.failed_handshakes),
        (CLIENTS as u64, 0)
    );
}

/// More than the listener engine takes from its poll at once (256).
const IDLE: usize = 1500;

/// Opens `IDLE` idle connections to `address`, then a valid client behind
/// them, on a thread; returns once they are all in the listener's backlog.
fn a_burst_then_a_client(
    address: &Address,
) -> (
    Vec<std::net::TcpStream>,
    std::thread::JoinHandle<mpconn::Result<u8>>,
) {
    let Address::Tcp(sa) = *address else {
        panic!("a burst over TCP")
    };
    let idle = (0..IDLE)
        .map(|_| std::net::TcpStream::connect(sa).unwrap())
        .collect();
    let (connected, is_connected) = std::sync::mpsc::channel();
    let client = std::thread::spawn(move || {
        let conn = mpconn::Client::connect_unauthenticated(sa)?;
        let _ = connected.send(());
        let mut conn = conn.authenticate_as_client(KEY)?;
        conn.send(&7u8)?;
        conn.recv::<u8>()
    });
    let _ = is_connected.recv();
    (idle, client)
}

/// Room and time for every idle connection: only the burst is tested.
fn burst_options() -> ListenerOptions {
    ListenerOptions::new()
        .backlog(4 * IDLE as i32)
        .max_pending_handshakes(4 * IDLE)
        .first_answer_timeout(Duration::from_secs(60))
        .handshake_timeout(Duration::from_secs(60))
        .accept_timeout(Some(Duration::from_secs(20)))
}

async fn serve_one<R: Runtime>(listener: &Listener<R>) {
    let mut conn = listener.accept().await.unwrap();
    let got: u8 = conn.recv().await.unwrap();
    conn.send(&(got + 1)).await.unwrap();
}

/// A listener that starts accepting with a burst of idle connections and
/// one valid client behind them in its backlog: all are accepted and sent
/// a challenge at once, and more sockets are ready than the engine's poll
/// reports in one go. The client's answer must still be read, without
/// waiting for any deadline (none passes here: the client's own 5 s
/// handshake deadline would). Tokio watches the poll's descriptor
/// edge-triggered and hears of those events only once: an engine step that
/// left events in the poll stalled there until a deadline. async-io re-arms
/// its interest level-triggered and did not; it runs the same case.
#[cfg(feature = "tokio")]
#[test]
fn a_client_behind_a_burst_of_idle_connections_is_served_on_tokio() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _w = watchdog(60);
    common::raise_descriptor_limit(2 * IDLE + 256);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _in = rt.enter();
    let listener = mpconn::tokio::Listener::bind_with(burst_options(), "127.0.0.1:0", KEY).unwrap();
    let (idle, client) = a_burst_then_a_client(listener.address());
    rt.block_on(serve_one(&listener));
    assert_eq!(client.join().unwrap().map_err(|e| e.to_string()), Ok(8));
    drop(idle);
}

#[cfg(feature = "async-io")]
#[test]
fn a_client_behind_a_burst_of_idle_connections_is_served_on_async_io() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _w = watchdog(60);
    common::raise_descriptor_limit(2 * IDLE + 256);
    let listener =
        mpconn::async_io::Listener::bind_with(burst_options(), "127.0.0.1:0", KEY).unwrap();
    let (idle, client) = a_burst_then_a_client(listener.address());
    async_io::block_on(serve_one(&listener));
    assert_eq!(client.join().unwrap().map_err(|e| e.to_string()), Ok(8));
    drop(idle);
}
