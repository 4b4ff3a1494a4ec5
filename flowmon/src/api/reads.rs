//! What the read API (and the console) read from Redis: the sensors, a sensor's stored
//! sessions and their statistics, one session, a peer's flow records. Tanner's layout
//! (`docs/redis-schema.md`).

use std::net::IpAddr;

use redis::{AsyncCommands as _, RedisError};
use serde::Serialize;
use serde_json::Value;
use thiserror::Error;
use uuid::Uuid;

use crate::{
    analyzer::storage::{SNARE_IDS, sensor_key},
    sinks::redis::peer_index,
    store::Connection,
};

/// Flow records [`peer_flows`] returns at most, oldest first.
pub const MAX_FLOW_RECORDS: isize = 10_000;

#[derive(Debug, Error)]
pub enum ReadError {
    /// The uuid is not a sensor's: not a uuid, or never in `snare_ids`.
    #[error("no such sensor")]
    UnknownSensor,
    #[error(transparent)]
    Redis(#[from] RedisError),
}

/// Every sensor uuid, sorted.
pub async fn sensors(redis: &mut Connection) -> Result<Vec<String>, RedisError> {
    let mut ids: Vec<String> = redis.smembers(SNARE_IDS).await?;
    ids.sort_unstable();
    Ok(ids)
}

/// The sessions of sensor `uuid`, newest first, at most `limit` (-1: all). A sensor none of
/// whose sessions are left (retention) has none; one never seen is unknown.
pub async fn sensor_sessions(
    redis: &mut Connection,
    uuid: &str,
    limit: isize,
) -> Result<Vec<Value>, ReadError> {
    Ok(sensor_page(redis, uuid, 0, limit).await?.sessions)
}

/// A page of a sensor's sessions, newest first.
#[derive(Debug, Default)]
pub struct SessionPage {
    pub sessions: Vec<Value>,
    /// Members read (non-JSON ones included): fewer than asked for means the last page.
    pub read: u64,
    /// The sensor's sessions in all.
    pub total: u64,
}

/// The sessions of sensor `uuid` after the newest `skip`, newest first, at most `limit` (-1:
/// all); a sensor none of whose sessions are left (retention) has none, one never seen is
/// unknown.
pub async fn sensor_page(
    redis: &mut Connection,
    uuid: &str,
    skip: isize,
    limit: isize,
) -> Result<SessionPage, ReadError> {
    let sensor = sensor_key(uuid).ok_or(ReadError::UnknownSensor)?;
    let (members, total): (Vec<String>, u64) = redis::pipe()
        .zrevrangebyscore_limit(&sensor, "+inf", "-inf", skip, limit)
        .zcard(&sensor)
        .query_async(redis)
        .await?;
    if total == 0 && !redis.sismember(SNARE_IDS, &sensor).await? {
        return Err(ReadError::UnknownSensor);
    }
    Ok(SessionPage {
        sessions: parse_members(&members),
        read: members.len() as u64,
        total,
    })
}

/// The stored session `sess_uuid` (any spelling of a uuid), from whichever sensor holds it.
pub async fn session(redis: &mut Connection, sess_uuid: &str) -> Result<Option<Value>, RedisError> {
    let Ok(sess_uuid) = Uuid::try_parse(sess_uuid) else {
        return Ok(None);
    };
    let sess_uuid = sess_uuid.simple().to_string();
    let sensors: Vec<String> = redis.smembers(SNARE_IDS).await?;
    for sensor in sensors {
        if let Some(found) = find_session(redis, &sensor, &sess_uuid).await? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// The flow records of `peer` last seen between `from` and `to` (epoch seconds, infinite
/// bounds allowed), oldest first, at most [`MAX_FLOW_RECORDS`].
pub async fn peer_flows(
    redis: &mut Connection,
    peer: IpAddr,
    from: f64,
    to: f64,
) -> Result<Vec<Value>, RedisError> {
    let members: Vec<String> = redis
        .zrangebyscore_limit(
            peer_index(&peer.to_canonical().to_string()),
            score_arg(from),
            score_arg(to),
            0,
            MAX_FLOW_RECORDS,
        )
        .await?;
    Ok(parse_members(&members))
}

/// A score bound as Redis spells it.
fn score_arg(score: f64) -> String {
    match score {
        f64::NEG_INFINITY => "-inf".into(),
        f64::INFINITY => "+inf".into(),
        score => score.to_string(),
    }
}

/// The JSON members; any that is not JSON (not written by flowmon or Tanner) is left out.
fn parse_members(members: &[String]) -> Vec<Value> {
    members
        .iter()
        .filter_map(|member| serde_json::from_str(member).ok())
        .collect()
}

/// Searches `sensor`'s set on the server for members holding `sess_uuid` (32 hex digits, so no
/// glob characters), then checks the one that is that session.
async fn find_session(
    redis: &mut Connection,
    sensor: &str,
    sess_uuid: &str,
) -> Result<Option<Value>, RedisError> {
    let mut cursor = 0u64;
    loop {
        let (next, page): (u64, Vec<String>) = redis::cmd("ZSCAN")
            .arg(sensor)
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("*{sess_uuid}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(redis)
            .await?;
        // Members and their scores alternate.
        let found = page
            .iter()
            .step_by(2)
            .filter_map(|member| serde_json::from_str::<Value>(member).ok())
            .find(|session| session["sess_uuid"] == sess_uuid);
        if found.is_some() || next == 0 {
            return Ok(found);
        }
        cursor = next;
    }
}

/// The attack types of a stored session, in path order.
pub fn attack_types(session: &Value) -> impl Iterator<Item = &str> {
    session["attack_types"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

/// Attack types `/snare-stats` counts, in Tanner's order.
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct AttackFrequency {
    pub sqli: u64,
    pub lfi: u64,
    pub xss: u64,
    pub rfi: u64,
    pub cmd_exec: u64,
}

impl AttackFrequency {
    fn count(&mut self, attack: &str) {
        match attack {
            "sqli" => self.sqli += 1,
            "lfi" => self.lfi += 1,
            "xss" => self.xss += 1,
            "rfi" => self.rfi += 1,
            "cmd_exec" => self.cmd_exec += 1,
            _ => {}
        }
    }
}

/// Tanner's statistics of a sensor's sessions.
#[derive(Debug, PartialEq, Serialize)]
pub struct SensorStats {
    pub total_sessions: usize,
    /// Seconds, summed over the sessions.
    pub total_duration: f64,
    /// Paths of each attack type.
    pub attack_frequency: AttackFrequency,
}

impl SensorStats {
    pub fn of(sessions: &[Value]) -> Self {
        let mut stats = Self {
            total_sessions: sessions.len(),
            total_duration: 0.0,
            attack_frequency: AttackFrequency::default(),
        };
        for session in sessions {
            let time = |key: &str| session[key].as_f64().unwrap_or_default();
            stats.total_duration += time("end_time") - time("start_time");
            for attack in attack_types(session) {
                stats.attack_frequency.count(attack);
            }
        }
        stats
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn stats_sum_durations_and_count_tanners_attack_types_per_path() {
        let sessions = [
            json!({"start_time": 10.0, "end_time": 12.5,
                   "attack_types": ["index", "sqli", "sqli", "xxe_injection"]}),
            json!({"start_time": 20.0, "end_time": 20.0, "attack_types": ["cmd_exec"]}),
        ];
        let stats = SensorStats::of(&sessions);
        assert_eq!(stats.total_sessions, 2);
        assert_eq!(stats.total_duration, 2.5);
        assert_eq!(
            stats.attack_frequency,
            AttackFrequency {
                sqli: 2,
                cmd_exec: 1,
                ..AttackFrequency::default()
            }
        );
    }

    #[test]
    fn score_bounds_are_spelled_as_redis_reads_them() {
        assert_eq!(score_arg(f64::NEG_INFINITY), "-inf");
        assert_eq!(score_arg(f64::INFINITY), "+inf");
        assert_eq!(score_arg(1.5), "1.5");
    }
}
