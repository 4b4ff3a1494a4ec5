//! Reverse DNS for the crawler rules, never in the way: a look-up that fails or takes longer
//! than the timeout is no name (Tanner's failed look-up killed its sweeper for good), answers
//! are cached, and at most a few look-ups run at once on blocking threads, so a stalled
//! resolver cannot pile threads up.

use std::{
    collections::HashMap,
    ffi::CStr,
    net::IpAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use tokio::sync::Semaphore;

/// A blocking reverse look-up: the system resolver's, or a test's.
pub type Lookup = fn(IpAddr) -> Option<String>;

/// How long an answer, a missing name included, is reused.
const CACHE_TTL: Duration = Duration::from_secs(3600);
const CACHE_MAX: usize = 10_000;
/// Answers by address, with when they came.
type Cache = HashMap<IpAddr, (Option<String>, Instant)>;

/// Look-ups running at once; a look-up waiting for its turn counts against its timeout.
const CONCURRENT: usize = 8;

/// Cheap to clone; clones share the cache.
#[derive(Clone)]
pub struct ReverseDns {
    lookup: Lookup,
    timeout: Duration,
    cache: Arc<Mutex<Cache>>,
    running: Arc<Semaphore>,
}

impl ReverseDns {
    /// The system resolver (`getnameinfo`, so `/etc/hosts` and nsswitch apply).
    pub fn system(timeout: Duration) -> Self {
        Self::with_lookup(getnameinfo, timeout)
    }

    pub fn with_lookup(lookup: Lookup, timeout: Duration) -> Self {
        Self {
            lookup,
            timeout,
            cache: Arc::default(),
            running: Arc::new(Semaphore::new(CONCURRENT)),
        }
    }

    /// The name of `ip`, if one is found within the timeout.
    pub async fn name_of(&self, ip: IpAddr) -> Option<String> {
        if let Some((name, at)) = self.cache().get(&ip)
            && at.elapsed() < CACHE_TTL
        {
            return name.clone();
        }
        let lookup = self.lookup;
        let running = self.running.clone();
        let name = tokio::time::timeout(self.timeout, async move {
            let permit = running.acquire_owned().await.ok()?;
            // The permit goes with the thread: it is released when the look-up returns, even
            // one that has outlived its timeout.
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                lookup(ip)
            })
            .await
            .ok()?
        })
        .await
        .unwrap_or_else(|_| {
            tracing::debug!(%ip, "reverse DNS timed out");
            None
        });
        let mut cache = self.cache();
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(ip, (name.clone(), Instant::now()));
        name
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `getnameinfo(NI_NAMEREQD)`: the name, or `None` when there is none or the look-up failed.
fn getnameinfo(ip: IpAddr) -> Option<String> {
    let addr = SockAddr::of(ip);
    let mut host = [0 as libc::c_char; 1025];
    // SAFETY: `addr` is a valid sockaddr of the given length; `host` is writable for its
    // length and getnameinfo NUL-terminates what it writes there.
    let status = unsafe {
        libc::getnameinfo(
            addr.as_ptr(),
            addr.len(),
            host.as_mut_ptr(),
            host.len() as libc::socklen_t,
            std::ptr::null_mut(),
            0,
            libc::NI_NAMEREQD,
        )
    };
    (status == 0).then(|| {
        // SAFETY: on success `host` holds a NUL-terminated string.
        unsafe { CStr::from_ptr(host.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    })
}

/// A `sockaddr_in` or `sockaddr_in6` for `ip`, port 0.
enum SockAddr {
    V4(libc::sockaddr_in),
    V6(libc::sockaddr_in6),
}

impl SockAddr {
    fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(ip) => {
                // SAFETY: all-zero is a valid sockaddr_in.
                let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
                addr.sin_family = libc::AF_INET as libc::sa_family_t;
                addr.sin_addr.s_addr = u32::from_ne_bytes(ip.octets());
                Self::V4(addr)
            }
            IpAddr::V6(ip) => {
                // SAFETY: all-zero is a valid sockaddr_in6.
                let mut addr: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
                addr.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                addr.sin6_addr.s6_addr = ip.octets();
                Self::V6(addr)
            }
        }
    }

    fn as_ptr(&self) -> *const libc::sockaddr {
        match self {
            Self::V4(addr) => (addr as *const libc::sockaddr_in).cast(),
            Self::V6(addr) => (addr as *const libc::sockaddr_in6).cast(),
        }
    }

    fn len(&self) -> libc::socklen_t {
        (match self {
            Self::V4(_) => size_of::<libc::sockaddr_in>(),
            Self::V6(_) => size_of::<libc::sockaddr_in6>(),
        }) as libc::socklen_t
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    use super::*;

    static LOOKUPS: AtomicUsize = AtomicUsize::new(0);

    fn counted(ip: IpAddr) -> Option<String> {
        LOOKUPS.fetch_add(1, SeqCst);
        (ip == IpAddr::from([66, 249, 66, 1])).then(|| "crawl-66-249-66-1.googlebot.com".into())
    }

    fn stalled(_: IpAddr) -> Option<String> {
        std::thread::sleep(Duration::from_millis(500));
        Some("too.late.example".into())
    }

    #[tokio::test]
    async fn answers_and_missing_names_are_cached() {
        let rdns = ReverseDns::with_lookup(counted, Duration::from_secs(5));
        let googlebot = IpAddr::from([66, 249, 66, 1]);
        let nameless = IpAddr::from([192, 0, 2, 1]);
        for _ in 0..3 {
            assert_eq!(
                rdns.name_of(googlebot).await.as_deref(),
                Some("crawl-66-249-66-1.googlebot.com")
            );
            assert_eq!(rdns.clone().name_of(nameless).await, None);
        }
        assert_eq!(LOOKUPS.load(SeqCst), 2);
    }

    #[tokio::test]
    async fn a_slow_lookup_is_no_name_within_the_timeout() {
        let rdns = ReverseDns::with_lookup(stalled, Duration::from_millis(50));
        let started = Instant::now();
        assert_eq!(rdns.name_of(IpAddr::from([192, 0, 2, 9])).await, None);
        assert!(started.elapsed() < Duration::from_millis(400));
    }

    #[tokio::test]
    async fn the_system_resolver_answers_for_loopback_without_the_network() {
        // /etc/hosts names 127.0.0.1 on any Debian; whatever it says, the call returns.
        let rdns = ReverseDns::system(Duration::from_secs(5));
        let name = rdns.name_of(IpAddr::from([127, 0, 0, 1])).await;
        assert!(name.is_none_or(|name| !name.is_empty()));
    }
}
