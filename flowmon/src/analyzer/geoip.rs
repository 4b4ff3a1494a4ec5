//! Session locations from a MaxMind-format city database (`--geoip-db`: GeoLite2-City,
//! GeoIP2-City, or a compatible one such as DB-IP's).

use std::{net::IpAddr, path::Path};

use anyhow::{Context as _, Result};
use maxminddb::{Reader, geoip2};
use serde::{Serialize, Serializer};

/// A session's `location`: where the database places the peer, or `"NA"` without a database
/// or when the address is not in it.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Location {
    #[default]
    NotAvailable,
    Found(Place),
}

/// The English names, as Tanner takes them from the database.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Place {
    pub country: Option<String>,
    pub country_code: Option<String>,
    pub city: Option<String>,
    pub zip_code: Option<String>,
}

impl Serialize for Location {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::NotAvailable => serializer.serialize_str("NA"),
            Self::Found(place) => place.serialize(serializer),
        }
    }
}

/// The database, if any; it is read into memory once.
#[derive(Default)]
pub struct GeoIp {
    reader: Option<Reader<Vec<u8>>>,
}

impl std::fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoIp")
            .field(
                "database",
                &self.reader.as_ref().map(|r| &r.metadata().database_type),
            )
            .finish()
    }
}

impl GeoIp {
    pub fn open(path: Option<&Path>) -> Result<Self> {
        let reader = path
            .map(|path| {
                Reader::open_readfile(path)
                    .with_context(|| format!("cannot open the GeoIP database {}", path.display()))
            })
            .transpose()?;
        Ok(Self { reader })
    }

    pub fn locate(&self, ip: Option<IpAddr>) -> Location {
        let (Some(reader), Some(ip)) = (&self.reader, ip) else {
            return Location::NotAvailable;
        };
        let city = reader
            .lookup(ip)
            .and_then(|found| found.decode::<geoip2::City<'_>>());
        match city {
            Ok(Some(city)) => Location::Found(Place {
                country: city.country.names.english.map(str::to_owned),
                country_code: city.country.iso_code.map(str::to_owned),
                city: city.city.names.english.map(str::to_owned),
                zip_code: city.postal.code.map(str::to_owned),
            }),
            Ok(None) => Location::NotAvailable,
            Err(err) => {
                tracing::debug!(%ip, %err, "GeoIP look-up failed");
                Location::NotAvailable
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_database_every_location_is_na() {
        let geoip = GeoIp::open(None).unwrap();
        let location = geoip.locate(Some(IpAddr::from([74, 217, 37, 84])));
        assert_eq!(location, Location::NotAvailable);
        assert_eq!(serde_json::to_value(location).unwrap(), "NA");
        assert_eq!(geoip.locate(None), Location::NotAvailable);
    }

    #[test]
    fn a_place_is_four_nullable_strings() {
        let place = Location::Found(Place {
            country: Some("United States".into()),
            country_code: Some("US".into()),
            city: None,
            zip_code: Some("30080".into()),
        });
        assert_eq!(
            serde_json::to_value(place).unwrap(),
            serde_json::json!({
                "country": "United States", "country_code": "US", "city": null, "zip_code": "30080"
            })
        );
    }

    #[test]
    fn a_missing_database_is_an_error_naming_it() {
        let err = GeoIp::open(Some(Path::new("/nonexistent/city.mmdb")))
            .err()
            .unwrap();
        assert!(format!("{err:#}").contains("/nonexistent/city.mmdb"));
    }
}
