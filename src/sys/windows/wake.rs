//! Waking an async task when an event is signalled, for the overlapped
//! operations of a named pipe (its readiness probe, a write in flight):
//! a one-shot wait of the system thread pool (`RegisterWaitForSingleObject`)
//! wakes the task's `Waker`. No thread of ours waits, and no thread is
//! spent per pipe: the pool waits for up to 63 objects with one thread.

use std::ffi::c_void;
use std::io;
use std::ptr;
use std::sync::{Arc, Mutex};
use std::task::Waker;

use windows_sys::Win32::Foundation::{HANDLE, INVALID_HANDLE_VALUE};
use windows_sys::Win32::System::Threading::{
    INFINITE, RegisterWaitForSingleObject, UnregisterWaitEx, WT_EXECUTEINWAITTHREAD,
    WT_EXECUTEONLYONCE,
};

/// What the pool's callback and the task share.
#[derive(Debug, Default)]
struct Shared {
    /// The waker to wake, and whether the wait has fired.
    state: Mutex<(Option<Waker>, bool)>,
}

/// One registered wait: its handle, the event it waits on, and the
/// reference to `Shared` the callback holds.
#[derive(Debug)]
struct Armed {
    wait: HANDLE,
    event: HANDLE,
    shared: *const Shared,
}

/// Wakes the waker it was last given once the event it was armed with is
/// signalled. Dropping it (or arming it anew) ends the wait first, so the
/// event must stay open as long as it is armed: keep it beside the
/// operation whose event it watches, and disarm it before that goes.
#[derive(Debug, Default)]
pub struct EventWaker {
    armed: Option<Armed>,
}

// SAFETY: the raw handles are a wait registration and an event, usable from
// any thread; `shared` is an `Arc<Shared>` reference (Shared is Send + Sync).
unsafe impl Send for EventWaker {}
// SAFETY: as for Send; `&EventWaker` gives access to nothing.
unsafe impl Sync for EventWaker {}

unsafe extern "system" fn fired(context: *mut c_void, _timed_out: bool) {
    // SAFETY: `context` is the `Arc<Shared>` reference given to the
    // registration, which `disarm` drops only after UnregisterWaitEx has
    // waited for this callback to return.
    let shared = unsafe { &*(context as *const Shared) };
    let waker = {
        let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        state.1 = true;
        state.0.take()
    };
    if let Some(waker) = waker {
        waker.wake();
    }
}

impl EventWaker {
    /// Wakes `waker` once `event` is signalled, at once if it is signalled
    /// now. Arming again for the same event while the wait has not fired
    /// only swaps the waker; otherwise the old wait ends and a new one
    /// starts.
    pub fn arm(&mut self, event: HANDLE, waker: &Waker) -> io::Result<()> {
        if let Some(armed) = &self.armed
            && armed.event == event
        {
            // SAFETY: the registration holds its reference until disarmed.
            let shared = unsafe { &*armed.shared };
            let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            if !state.1 {
                match &state.0 {
                    Some(old) if old.will_wake(waker) => {}
                    _ => state.0 = Some(waker.clone()),
                }
                return Ok(());
            }
        }
        self.disarm();
        let shared = Arc::new(Shared {
            state: Mutex::new((Some(waker.clone()), false)),
        });
        let context = Arc::into_raw(shared);
        let mut wait: HANDLE = ptr::null_mut();
        // SAFETY: `event` is an open event the caller keeps open while armed;
        // `context` is a live `Arc<Shared>` reference that the registration
        // owns until `disarm` has unregistered it; the callback only reads it.
        let ok = unsafe {
            RegisterWaitForSingleObject(
                &mut wait,
                event,
                Some(fired),
                context.cast(),
                INFINITE,
                WT_EXECUTEONLYONCE | WT_EXECUTEINWAITTHREAD,
            )
        };
        if ok == 0 {
            let e = io::Error::last_os_error();
            // SAFETY: the registration failed, so nothing else holds the
            // reference made above.
            drop(unsafe { Arc::from_raw(context) });
            return Err(e);
        }
        self.armed = Some(Armed {
            wait,
            event,
            shared: context,
        });
        Ok(())
    }

    /// Ends the wait, waiting for a callback that is running to return.
    pub fn disarm(&mut self) {
        let Some(armed) = self.armed.take() else {
            return;
        };
        // SAFETY: `wait` is a registration of ours not yet unregistered;
        // INVALID_HANDLE_VALUE makes the call wait for a running callback.
        // This is never called from the callback itself.
        unsafe { UnregisterWaitEx(armed.wait, INVALID_HANDLE_VALUE) };
        // SAFETY: the registration is gone and its callback has returned:
        // the reference it held comes back here, once.
        drop(unsafe { Arc::from_raw(armed.shared) });
    }
}

impl Drop for EventWaker {
    fn drop(&mut self) {
        self.disarm();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::sys::Event;

    /// A waker that counts its wake-ups.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (count.clone(), Waker::from(count))
    }

    /// Waits up to a second for `count` to reach `n`.
    fn reaches(count: &Count, n: usize) -> bool {
        let end = Instant::now() + Duration::from_secs(1);
        while count.0.load(Ordering::SeqCst) < n {
            if Instant::now() > end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    #[test]
    fn the_last_waker_given_is_woken_once_when_the_event_is_signalled() {
        let event = Event::new().unwrap();
        let (first, first_waker) = counter();
        let (second, second_waker) = counter();
        let mut waker = EventWaker::default();
        waker.arm(event.raw(), &first_waker).unwrap();
        // Armed again before the event: only the waker is swapped.
        waker.arm(event.raw(), &second_waker).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(second.0.load(Ordering::SeqCst), 0, "woken before the event");
        event.set();
        assert!(reaches(&second, 1), "the event did not wake the task");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            second.0.load(Ordering::SeqCst),
            1,
            "a one-shot wait woke twice"
        );
        assert_eq!(
            first.0.load(Ordering::SeqCst),
            0,
            "the replaced waker was woken"
        );
        // Armed on an event that is signalled already: woken at once.
        waker.arm(event.raw(), &first_waker).unwrap();
        assert!(reaches(&first, 1));
    }

    #[test]
    fn a_disarmed_waker_is_not_woken() {
        let event = Event::new().unwrap();
        let (count, task) = counter();
        let mut waker = EventWaker::default();
        waker.arm(event.raw(), &task).unwrap();
        waker.disarm();
        event.set();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        drop(waker);
    }
}
