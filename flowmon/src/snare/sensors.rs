//! Sensors are known from their first event: Tanner adds a sensor to `snare_ids` at each of
//! its events, and T-Pot's smoke test (a request through SNARE, then `snare_ids` and the API's
//! `/snares` checked within 30 s) relies on it; waiting for the sensor's first stored session
//! would take a session timeout.

use std::{
    collections::HashSet,
    sync::{Mutex, PoisonError},
};

use crate::{analyzer::storage::sensor_added, store::Store};

/// Sensors remembered as added; past it every event of a sensor not remembered adds it again
/// (an idempotent write), so a flood of made-up uuids costs no memory.
const MAX_REMEMBERED: usize = 10_000;

pub struct Sensors {
    store: Store,
    added: Mutex<HashSet<String>>,
}

impl Sensors {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            added: Mutex::default(),
        }
    }

    /// Adds the sensor of an event to `snare_ids`, once.
    pub fn saw(&self, snare_uuid: Option<&str>) {
        let Some(snare_uuid) = snare_uuid else {
            return;
        };
        {
            let mut added = self.added.lock().unwrap_or_else(PoisonError::into_inner);
            if added.contains(snare_uuid) {
                return;
            }
            if added.len() < MAX_REMEMBERED {
                added.insert(snare_uuid.to_owned());
            }
        }
        if let Some(write) = sensor_added(snare_uuid) {
            self.store.submit(write);
        }
    }
}
