//! Units of work for Redis, independent of the connection kind: a [`Write`] is the list of
//! [`Op`]s that store one item (a flow record, an analysed session). Every op is idempotent, so a
//! write whose outcome is unknown (lost reply, timeout, crash before the spool's cursor moved)
//! can simply be applied again. Writes are serialised as they are into the spool.

use std::sync::LazyLock;

use redis::{Cmd, Script, cluster_routing::Slot};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Write {
    /// Names the item in logs (a flow record's `record_id`).
    pub id: String,
    pub ops: Vec<Op>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Op {
    /// `XADD stream MAXLEN ~ maxlen * fields…`, unless `dedupe_key` was already added in the
    /// last `dedupe_secs` seconds (see [`XADD_ONCE_LUA`]).
    XAddOnce {
        stream: String,
        dedupe_key: String,
        dedupe_secs: u64,
        maxlen: u64,
        fields: Vec<(String, String)>,
    },
    /// `ZADD key score member`.
    ZAdd {
        key: String,
        score: f64,
        member: String,
    },
    /// `ZREMRANGEBYSCORE key -inf (below`.
    ZRemRangeByScore { key: String, below: f64 },
    /// `EXPIRE key secs`.
    Expire { key: String, secs: u64 },
    /// `SADD key member`.
    SAdd { key: String, member: String },
}

/// XADD once per dedupe key. The dedupe set is a sorted set of the keys added, scored by the
/// server's time, trimmed to the window on every call so it stays bounded; it shares the
/// stream's cluster slot (see [`dedupe_set`]), which lets the script touch both.
///
/// KEYS: the stream, its dedupe set. ARGV: dedupe key, window (s), MAXLEN, field, value, …
pub const XADD_ONCE_LUA: &str = r"
local now = tonumber(redis.call('TIME')[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - window))
if redis.call('ZADD', KEYS[2], 'NX', now, ARGV[1]) == 0 then
  return 0
end
redis.call('EXPIRE', KEYS[2], window)
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 4))
return 1
";

static XADD_ONCE: LazyLock<Script> = LazyLock::new(|| Script::new(XADD_ONCE_LUA));

/// The dedupe set of `stream`: `{<stream>}:seen`. The hash tag makes it hash to the slot of the
/// key `stream` itself (which must then hold no `{`).
pub fn dedupe_set(stream: &str) -> String {
    debug_assert!(
        !stream.contains('{'),
        "stream key {stream:?} has a hash tag"
    );
    format!("{{{stream}}}:seen")
}

/// How a script op reaches the server: by hash (the normal case) or, after a NOSCRIPT reply
/// (a restarted or new server), with its source, which also caches it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScriptCall {
    Sha,
    Source,
}

impl Op {
    /// The key that decides the op's cluster slot.
    pub fn key(&self) -> &str {
        match self {
            Op::XAddOnce { stream: key, .. }
            | Op::ZAdd { key, .. }
            | Op::ZRemRangeByScore { key, .. }
            | Op::Expire { key, .. }
            | Op::SAdd { key, .. } => key,
        }
    }

    pub fn slot(&self) -> Slot {
        Slot::for_key(self.key())
    }

    pub fn command(&self, script: ScriptCall) -> Cmd {
        match self {
            Op::XAddOnce {
                stream,
                dedupe_key,
                dedupe_secs,
                maxlen,
                fields,
            } => {
                let (call, script) = match script {
                    ScriptCall::Sha => ("EVALSHA", XADD_ONCE.get_hash()),
                    ScriptCall::Source => ("EVAL", XADD_ONCE_LUA),
                };
                let mut cmd = redis::cmd(call);
                cmd.arg(script)
                    .arg(2)
                    .arg(stream)
                    .arg(dedupe_set(stream))
                    .arg(dedupe_key)
                    .arg(dedupe_secs)
                    .arg(maxlen);
                for (field, value) in fields {
                    cmd.arg(field).arg(value);
                }
                cmd
            }
            Op::ZAdd { key, score, member } => {
                let mut cmd = redis::cmd("ZADD");
                cmd.arg(key).arg(score).arg(member);
                cmd
            }
            Op::ZRemRangeByScore { key, below } => {
                let mut cmd = redis::cmd("ZREMRANGEBYSCORE");
                cmd.arg(key).arg("-inf").arg(format!("({below}"));
                cmd
            }
            Op::Expire { key, secs } => {
                let mut cmd = redis::cmd("EXPIRE");
                cmd.arg(key).arg(secs);
                cmd
            }
            Op::SAdd { key, member } => {
                let mut cmd = redis::cmd("SADD");
                cmd.arg(key).arg(member);
                cmd
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(cmd: &Cmd) -> Vec<String> {
        cmd.args_iter()
            .map(|arg| match arg {
                redis::Arg::Simple(bytes) => String::from_utf8(bytes.to_vec()).unwrap(),
                _ => panic!("only plain arguments expected"),
            })
            .collect()
    }

    fn xadd_once() -> Op {
        Op::XAddOnce {
            stream: "flowmon:flows".into(),
            dedupe_key: "f1:0".into(),
            dedupe_secs: 60,
            maxlen: 1000,
            fields: vec![
                ("record".into(), "{}".into()),
                ("flow_id".into(), "f1".into()),
            ],
        }
    }

    #[test]
    fn xadd_once_is_a_script_call_on_the_stream_and_its_dedupe_set() {
        let op = xadd_once();
        let tail = [
            "2",
            "flowmon:flows",
            "{flowmon:flows}:seen",
            "f1:0",
            "60",
            "1000",
            "record",
            "{}",
            "flow_id",
            "f1",
        ];
        let by_sha = args(&op.command(ScriptCall::Sha));
        assert_eq!(by_sha[..2], ["EVALSHA", XADD_ONCE.get_hash()]);
        assert_eq!(by_sha[2..], tail);
        let by_source = args(&op.command(ScriptCall::Source));
        assert_eq!(by_source[..2], ["EVAL", XADD_ONCE_LUA]);
        assert_eq!(by_source[2..], tail);
    }

    #[test]
    fn sorted_set_ops_encode_as_their_commands() {
        let zadd = Op::ZAdd {
            key: "k".into(),
            score: 1700000000.25,
            member: "m".into(),
        };
        assert_eq!(
            args(&zadd.command(ScriptCall::Sha)),
            ["ZADD", "k", "1700000000.25", "m"]
        );
        let trim = Op::ZRemRangeByScore {
            key: "k".into(),
            below: 1699913600.5,
        };
        assert_eq!(
            args(&trim.command(ScriptCall::Sha)),
            ["ZREMRANGEBYSCORE", "k", "-inf", "(1699913600.5"]
        );
        let expire = Op::Expire {
            key: "k".into(),
            secs: 86400,
        };
        assert_eq!(
            args(&expire.command(ScriptCall::Sha)),
            ["EXPIRE", "k", "86400"]
        );
    }

    #[test]
    fn set_ops_encode_as_their_commands() {
        let sadd = Op::SAdd {
            key: "snare_ids".into(),
            member: "9c10172f-7ce2-4fb4-b1c6-abc70141db56".into(),
        };
        assert_eq!(
            args(&sadd.command(ScriptCall::Sha)),
            ["SADD", "snare_ids", "9c10172f-7ce2-4fb4-b1c6-abc70141db56"]
        );
        assert_eq!(sadd.key(), "snare_ids");
        let line = serde_json::to_string(&sadd).unwrap();
        assert!(line.contains(r#""op":"sadd""#), "{line}");
        assert_eq!(serde_json::from_str::<Op>(&line).unwrap(), sadd);
    }

    #[test]
    fn the_dedupe_set_shares_the_stream_slot() {
        let op = xadd_once();
        assert_eq!(op.key(), "flowmon:flows");
        assert_eq!(op.slot(), Slot::for_key(dedupe_set("flowmon:flows")));
    }

    #[test]
    fn writes_round_trip_through_json() {
        let write = Write {
            id: "f1:0".into(),
            ops: vec![
                xadd_once(),
                Op::ZAdd {
                    key: "flowmon:peer:10.0.0.1".into(),
                    score: 1700000000.123456,
                    member: "{\"a\":1}".into(),
                },
            ],
        };
        let line = serde_json::to_string(&write).unwrap();
        assert!(line.contains(r#""op":"xaddonce""#), "{line}");
        assert_eq!(serde_json::from_str::<Write>(&line).unwrap(), write);
    }
}
