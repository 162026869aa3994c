//! Event timestamps: RFC 3339 parsing, millisecond output, and Segment's
//! clock-skew correction `timestamp = receivedAt − (sentAt − originalTimestamp)`.

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// Parses an RFC 3339 timestamp (any offset, any number of fraction digits).
pub(crate) fn parse(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

/// Formats as UTC RFC 3339 with exactly three fraction digits, truncated
/// (`2024-05-01T12:00:00.123Z`); `None` outside the years 0000–9999.
///
/// Written out digit by digit: every stored event carries three or four
/// timestamps, and `time`'s general formatter (a format description walked
/// item by item) cost about 9 % of a 100-event request's CPU in a profile.
pub(crate) fn format(t: OffsetDateTime) -> Option<String> {
    // `to_offset` panics when the offset pushes the time past the year 9999.
    let utc = t.checked_to_offset(UtcOffset::UTC)?;
    // The date and the time each in one conversion, not one per field.
    let (year, month, day) = utc.to_calendar_date();
    let (hour, minute, second, milli) = utc.to_hms_milli();
    let year = u32::try_from(year).ok().filter(|y| *y <= 9999)?;
    let mut out = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, digits: usize, mut value: u32| {
        for i in (at..at + digits).rev() {
            out[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, u32::from(u8::from(month)));
    put(8, 2, u32::from(day));
    put(11, 2, u32::from(hour));
    put(14, 2, u32::from(minute));
    put(17, 2, u32::from(second));
    put(20, 3, u32::from(milli));
    // ASCII digits and separators only, so this never fails.
    std::str::from_utf8(&out).ok().map(str::to_owned)
}

/// The client's clock readings of one event, as parsed from the request.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ClientTimes {
    /// `sentAt`: client clock when the batch was sent.
    pub sent_at: Option<OffsetDateTime>,
    /// `originalTimestamp`: client clock when the event happened.
    pub original: Option<OffsetDateTime>,
    /// `timestamp` set explicitly by the client (kept, never corrected).
    pub timestamp: Option<OffsetDateTime>,
}

/// The timestamps stored with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// Client clock when the event happened (`receivedAt` when unknown).
    pub original: OffsetDateTime,
    /// Best estimate of when the event happened, on the server's clock.
    pub timestamp: OffsetDateTime,
}

/// Applies Segment's rules. An explicit client `timestamp` is kept as is (and
/// is the `originalTimestamp` when none was sent). Otherwise the skew between
/// the two client readings `sentAt` and `originalTimestamp` is removed from
/// `receivedAt`; a missing `sentAt` means no measurable skew
/// (`timestamp = originalTimestamp`), and a missing `originalTimestamp` means
/// the event happened on receipt (`timestamp = receivedAt`). `None` when the
/// correction leaves the representable range.
pub(crate) fn resolve(received_at: OffsetDateTime, client: ClientTimes) -> Option<Resolved> {
    if let Some(timestamp) = client.timestamp {
        return Some(Resolved {
            original: client.original.unwrap_or(timestamp),
            timestamp,
        });
    }
    let Some(original) = client.original else {
        return Some(Resolved {
            original: received_at,
            timestamp: received_at,
        });
    };
    let sent_at = client.sent_at.unwrap_or(received_at);
    let skew = sent_at - original;
    let timestamp = received_at.checked_sub(skew)?;
    Some(Resolved {
        original,
        timestamp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const RECEIVED: OffsetDateTime = datetime!(2024-05-01 12:00:10 UTC);

    #[test]
    fn formats_with_milliseconds_in_utc() {
        assert_eq!(
            format(datetime!(2024-05-01 14:00:00.123456 +02:00)).unwrap(),
            "2024-05-01T12:00:00.123Z"
        );
        assert_eq!(
            format(datetime!(2024-05-01 12:00 UTC)).unwrap(),
            "2024-05-01T12:00:00.000Z"
        );
    }

    proptest::proptest! {
        /// The hand-written formatter says exactly what `time`'s own
        /// formatter says, for any instant and offset in range.
        #[test]
        fn formats_as_the_time_crate_does(
            // From the year -9999 to 9999, so outside 0000–9999 is covered too.
            secs in -377_705_116_800i64..253_402_300_800i64,
            nanos in 0u32..1_000_000_000,
            offset_secs in -86_399i32..86_400,
        ) {
            let offset = UtcOffset::from_whole_seconds(offset_secs).unwrap();
            let utc = OffsetDateTime::from_unix_timestamp(secs).unwrap()
                .checked_add(time::Duration::nanoseconds(i64::from(nanos)));
            let t = utc.and_then(|u| u.checked_to_offset(offset));
            proptest::prop_assume!(t.is_some());
            let t = t.unwrap();
            let oracle = t.checked_to_offset(UtcOffset::UTC).and_then(|u| {
                (0..=9999).contains(&u.year()).then(|| {
                    u.format(time::macros::format_description!(
                        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
                    ))
                    .unwrap()
                })
            });
            proptest::prop_assert_eq!(format(t), oracle);
        }
    }

    #[test]
    fn an_offset_past_the_last_year_is_out_of_range_not_a_panic() {
        // Found by tests/bad_input.rs: the handler panicked on this.
        assert!(format(parse("9999-12-31T23:59:59-23:59").unwrap()).is_none());
        assert!(format(parse("0000-01-01T00:00:00+23:59").unwrap()).is_none());
    }

    #[test]
    fn parses_what_sdks_send() {
        // analytics.js / rudder: toISOString(); Python: isoformat() with offset and micros.
        assert!(parse("2024-05-01T12:00:00.123Z").is_some());
        assert!(parse("2024-05-01T12:00:00.123456+00:00").is_some());
        assert!(parse("2024-05-01T12:00:00+02:00").is_some());
        assert!(parse("2024-05-01").is_none());
        assert!(parse("yesterday").is_none());
    }

    #[test]
    fn corrects_client_clock_skew() {
        // Client clock 1 h fast: event at 13:00:00, sent at 13:00:05 (client time).
        let r = resolve(
            RECEIVED,
            ClientTimes {
                sent_at: Some(datetime!(2024-05-01 13:00:05 UTC)),
                original: Some(datetime!(2024-05-01 13:00:00 UTC)),
                timestamp: None,
            },
        )
        .unwrap();
        assert_eq!(r.timestamp, datetime!(2024-05-01 12:00:05 UTC));
        assert_eq!(r.original, datetime!(2024-05-01 13:00:00 UTC));
    }

    #[test]
    fn explicit_timestamp_is_kept() {
        let ts = datetime!(2020-01-01 00:00 UTC);
        let r = resolve(
            RECEIVED,
            ClientTimes {
                sent_at: Some(datetime!(2024-05-01 13:00:05 UTC)),
                original: None,
                timestamp: Some(ts),
            },
        )
        .unwrap();
        assert_eq!((r.original, r.timestamp), (ts, ts));
    }

    #[test]
    fn missing_readings_default_to_received_at() {
        let r = resolve(RECEIVED, ClientTimes::default()).unwrap();
        assert_eq!((r.original, r.timestamp), (RECEIVED, RECEIVED));
        let orig = datetime!(2024-05-01 11:59:00 UTC);
        let r = resolve(
            RECEIVED,
            ClientTimes {
                original: Some(orig),
                ..ClientTimes::default()
            },
        )
        .unwrap();
        assert_eq!(r.timestamp, orig);
    }

    #[test]
    fn out_of_range_correction_is_refused() {
        let r = resolve(
            RECEIVED,
            ClientTimes {
                sent_at: Some(datetime!(9999-12-31 23:59 UTC)),
                original: Some(datetime!(-9999-01-01 0:00 UTC)),
                timestamp: None,
            },
        );
        assert!(r.is_none_or(|r| format(r.timestamp).is_none()));
    }
}
