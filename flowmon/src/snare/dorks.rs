//! Dorks: the hidden links SNARE plants in the pages it serves (`GET /dorks`), one per page, so
//! that crawlers and scanners that follow them show themselves. flowmon ships its own list of
//! vulnerable-looking paths (`dorks.txt`), seeds Tanner's dorks SET with it when the SET does
//! not exist, and learns user dorks from requests as Tanner does: for a request whose decoded
//! path has `?...=`, the prefix up to its last `=`. `/dorks` answers as Tanner does: 25 to 50
//! random dorks, then up to 50 of the user dorks; never an empty list, on which SNARE answers
//! 500 for every HTML page.

use std::{
    sync::{Arc, Mutex, PoisonError, RwLock, Weak},
    time::Duration,
};

use indexmap::IndexSet;
use redis::RedisResult;

use crate::store::Connection;

/// Tanner's dorks SET (`uuid3(NAMESPACE_DNS, "dorks")`).
pub const DORKS_KEY: &str = "9445102ddf663ed0a20382c219a952ba";
/// Tanner's user dorks SET (`uuid3(NAMESPACE_DNS, "user_dorks")`).
pub const USER_DORKS_KEY: &str = "c15b6b9c2ae835bb9f1078f055a55439";

/// The list flowmon ships, written for flowmon.
const SHIPPED: &str = include_str!("dorks.txt");
/// User dorks kept (and written to Redis) at most: requests with random queries would grow the
/// set without end.
const MAX_USER_DORKS: usize = 10_000;
/// A longer path makes no link worth planting.
const MAX_DORK_BYTES: usize = 512;
/// How often loading from Redis is tried again while it fails.
const LOAD_RETRY: Duration = Duration::from_secs(30);

/// Adds the shipped dorks only when the SET does not exist, in one step.
const SEED_LUA: &str = "if redis.call('EXISTS', KEYS[1]) == 0 then \
                        return redis.call('SADD', KEYS[1], unpack(ARGV)) end return 0";

/// The shipped dorks.
pub fn shipped() -> impl Iterator<Item = &'static str> {
    SHIPPED
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
}

/// The user dork of a request's path, as Tanner makes it: the path percent-decoded (yarl's
/// `human_repr`), then Python's `re.match(".*\?.*=")`: up to the last `=` of the first line
/// that has a `?` before it.
pub fn user_dork(path: &str) -> Option<String> {
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    let line = decoded.split('\n').next().unwrap_or_default();
    let question = line.find('?')?;
    let equals = line.rfind('=').filter(|&at| at > question)?;
    let dork = &line[..=equals];
    (dork.len() <= MAX_DORK_BYTES).then(|| dork.to_owned())
}

/// The user dorks learned, in the order they came, at most [`MAX_USER_DORKS`].
#[derive(Default)]
struct UserDorks(IndexSet<String>);

impl UserDorks {
    /// Whether `dork` is new (and now kept).
    fn add(&mut self, dork: &str) -> bool {
        self.0.len() < MAX_USER_DORKS && !self.0.contains(dork) && self.0.insert(dork.to_owned())
    }
}

pub struct DorkPool {
    dorks: RwLock<Vec<String>>,
    user: Mutex<UserDorks>,
    /// Where the SETs are: `None` without Redis.
    redis: Option<Connection>,
}

impl DorkPool {
    /// The shipped dorks; with `redis`, the SETs there are read (seeding the dorks SET) by
    /// [`DorkPool::keep_loading`], and learned user dorks added.
    pub fn new(redis: Option<Connection>) -> Self {
        Self {
            dorks: RwLock::new(shipped().map(str::to_owned).collect()),
            user: Mutex::default(),
            redis,
        }
    }

    /// Loads the SETs from Redis in the background, trying again every [`LOAD_RETRY`] until
    /// it succeeds or the dorks are dropped.
    pub fn keep_loading(dorks: &Arc<DorkPool>) {
        let weak: Weak<DorkPool> = Arc::downgrade(dorks);
        tokio::spawn(async move {
            loop {
                let Some(dorks) = weak.upgrade() else { return };
                match dorks.load().await {
                    Ok(()) => return,
                    Err(err) => {
                        tracing::info!(%err, "dorks not read from Redis yet: serving the shipped list");
                    }
                }
                drop(dorks);
                tokio::time::sleep(LOAD_RETRY).await;
            }
        });
    }

    /// Seeds Tanner's dorks SET with the shipped list when it does not exist, then serves what
    /// it holds and keeps its user dorks.
    async fn load(&self) -> RedisResult<()> {
        let Some(connection) = &self.redis else {
            return Ok(());
        };
        let mut connection = connection.clone();
        let script = redis::Script::new(SEED_LUA);
        let mut seed = script.prepare_invoke();
        seed.key(DORKS_KEY);
        for dork in shipped() {
            seed.arg(dork);
        }
        let added: i64 = seed.invoke_async(&mut connection).await?;
        if added > 0 {
            tracing::info!(added, "seeded Tanner's dorks set with flowmon's list");
        }
        let dorks: Vec<String> = redis::cmd("SMEMBERS")
            .arg(DORKS_KEY)
            .query_async(&mut connection)
            .await?;
        let user: Vec<String> = redis::cmd("SRANDMEMBER")
            .arg(USER_DORKS_KEY)
            .arg(MAX_USER_DORKS)
            .query_async(&mut connection)
            .await?;
        if !dorks.is_empty() {
            *self.dorks.write().unwrap_or_else(PoisonError::into_inner) = dorks;
        }
        let mut known = self.user.lock().unwrap_or_else(PoisonError::into_inner);
        for dork in user {
            known.add(&dork);
        }
        Ok(())
    }

    /// Learns the user dork of a request's `path`, if it has one and it is new.
    pub fn learn(&self, path: &str) {
        let Some(dork) = user_dork(path) else { return };
        let new = self
            .user
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .add(&dork);
        if let (true, Some(connection)) = (new, &self.redis) {
            let mut connection = connection.clone();
            tokio::spawn(async move {
                let added: RedisResult<i64> = redis::cmd("SADD")
                    .arg(USER_DORKS_KEY)
                    .arg(dork)
                    .query_async(&mut connection)
                    .await;
                if let Err(err) = added {
                    tracing::debug!(%err, "a user dork not written to Redis");
                }
            });
        }
    }

    /// What `/dorks` answers: 25 to 50 random dorks, then half to all of up to 50 user dorks.
    pub fn choose(&self, rng: &mut fastrand::Rng) -> Vec<String> {
        let dorks = self.dorks.read().unwrap_or_else(PoisonError::into_inner);
        let count = rng.usize(25..=50);
        let mut chosen = rng.choose_multiple(dorks.iter().cloned(), count);
        drop(dorks);
        let user = self.user.lock().unwrap_or_else(PoisonError::into_inner);
        let most = user.0.len().min(50);
        let count = rng.usize(most / 2..=most);
        chosen.extend(rng.choose_multiple(user.0.iter().cloned(), count));
        chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_list_is_several_hundred_distinct_paths() {
        let dorks: Vec<&str> = shipped().collect();
        assert!(dorks.len() >= 400, "{}", dorks.len());
        let distinct: std::collections::HashSet<&str> = dorks.iter().copied().collect();
        assert_eq!(distinct.len(), dorks.len());
        assert!(dorks.iter().all(|d| d.starts_with('/') && d.ends_with('=')));
    }

    #[test]
    fn user_dorks_are_the_path_up_to_its_last_equals() {
        assert_eq!(
            user_dork("/index.php?id=1").as_deref(),
            Some("/index.php?id=")
        );
        assert_eq!(
            user_dork("/a.php?x=1&y=%2Fetc").as_deref(),
            Some("/a.php?x=1&y=")
        );
        assert_eq!(user_dork("/p%3Fq%3D1").as_deref(), Some("/p?q="));
        assert_eq!(user_dork("/a=b?c"), None);
        assert_eq!(user_dork("/index.html"), None);
        assert_eq!(user_dork(&format!("/x?{}=", "a".repeat(600))), None);
    }

    #[test]
    fn dorks_are_answered_as_tanner_answers_them() {
        let dorks = DorkPool::new(None);
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20 {
            let chosen = dorks.choose(&mut rng);
            assert!((25..=50).contains(&chosen.len()), "{}", chosen.len());
        }
        for i in 0..80 {
            dorks.learn(&format!("/learned{i}.php?id=1"));
        }
        dorks.learn("/learned0.php?id=2");
        assert_eq!(dorks.user.lock().unwrap().0.len(), 80);
        for _ in 0..20 {
            let chosen = dorks.choose(&mut rng);
            let learned = chosen.iter().filter(|d| d.starts_with("/learned")).count();
            assert!((25..=50).contains(&learned), "{learned}");
            assert!((50..=100).contains(&chosen.len()));
        }
    }
}
