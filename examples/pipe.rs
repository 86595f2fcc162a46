//! The exchange from Python's `multiprocessing.connection` documentation,
//! between two threads over `mpconn::pipe()`.
//!
//! Run with `cargo run --example pipe`.

use std::thread;

fn main() -> mpconn::Result<()> {
    let (mut a, mut b) = mpconn::pipe()?;

    let peer = thread::spawn(move || -> mpconn::Result<()> {
        let value: (i32, String, Option<i32>) = b.recv()?;
        println!("b received {value:?}");
        b.send_bytes(b"thank you")?;
        let mut buf = [0u8; 40];
        let n = b.recv_bytes_into(&mut buf)?;
        let ints: Vec<i32> = buf[..n]
            .chunks_exact(4)
            .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        println!("b received {n} bytes into a 40-byte buffer: {ints:?}");
        Ok(())
    });

    a.send(&(1, "hello", None::<i32>))?;
    println!("a received {:?}", String::from_utf8_lossy(&a.recv_bytes()?));
    let ints: Vec<u8> = (0..5i32).flat_map(i32::to_ne_bytes).collect();
    a.send_bytes(&ints)?;
    peer.join().expect("peer thread panicked")
}
