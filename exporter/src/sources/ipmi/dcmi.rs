//! DCMI power management commands, which `ipmi-rs` does not have: the request bytes and the
//! decoding of the answers. Layout from the DCMI specification v1.5, §6.6.1 "Get Power Reading"
//! and §6.6.2 "Get Power Limit" (group extension NetFn 2Ch/2Dh, group extension identifier DCh as
//! the first byte of every request and response); cross-checked against ipmitool's
//! `lib/ipmi_dcmi.c` (`ipmi_dcmi_pwr_rd`, `struct power_reading`). The completion code is not
//! part of the data here (`ipmi-rs` hands it over separately).

/// Group extension NetFn (request) for DCMI.
pub const NETFN_GROUP_EXTENSION: u8 = 0x2C;
/// Group extension identification of DCMI: the first data byte of requests and responses.
pub const GROUP_ID: u8 = 0xDC;
/// Get Power Reading.
pub const CMD_GET_POWER_READING: u8 = 0x02;
/// Get Power Limit.
pub const CMD_GET_POWER_LIMIT: u8 = 0x03;
/// Get Power Limit's completion code "No Active Set Power Limit": a limit may be stored but it is
/// not enforced, so it is no budget.
pub const CC_NO_ACTIVE_LIMIT: u8 = 0x80;

/// Get Power Reading request, mode 01h "System Power Statistics" (the mode every DCMI BMC has;
/// 02h "Enhanced" is optional): group id, mode, mode attributes (00h), reserved.
pub fn power_reading_request() -> Vec<u8> {
    vec![GROUP_ID, 0x01, 0x00, 0x00]
}

/// Get Power Limit request: group id and two reserved bytes.
pub fn power_limit_request() -> Vec<u8> {
    vec![GROUP_ID, 0x00, 0x00]
}

/// Get Power Reading's answer (watts are whole watts on the wire).
#[derive(Debug, Clone, PartialEq)]
pub struct PowerReading {
    pub current_watts: u16,
    pub minimum_watts: u16,
    pub maximum_watts: u16,
    /// Mean over the statistics reporting period.
    pub average_watts: u16,
    /// IPMI timestamp (seconds) of the reading.
    pub timestamp: u32,
    /// Over how long min/max/average were taken, milliseconds.
    pub period_ms: u32,
    /// Power reading state bit 6: the BMC is measuring. When clear, the figures mean nothing.
    pub active: bool,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("DCMI answer has {0} data bytes, expected at least {1}")]
    Short(usize, usize),
    #[error("DCMI answer starts with {0:#04x}, not the DCMI group id 0xdc")]
    NotDcmi(u8),
}

fn u16_at(d: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([d[i], d[i + 1]])
}

fn u32_at(d: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]])
}

fn check(data: &[u8], len: usize) -> Result<(), DecodeError> {
    match data.first() {
        None => Err(DecodeError::Short(0, len)),
        Some(&id) if id != GROUP_ID => Err(DecodeError::NotDcmi(id)),
        _ if data.len() < len => Err(DecodeError::Short(data.len(), len)),
        _ => Ok(()),
    }
}

/// Decodes Get Power Reading's response data (after the completion code): DCh, current,
/// minimum, maximum, average (2 bytes each, LS first), timestamp (4), reporting period (4),
/// power reading state (1).
pub fn decode_power_reading(data: &[u8]) -> Result<PowerReading, DecodeError> {
    check(data, 18)?;
    Ok(PowerReading {
        current_watts: u16_at(data, 1),
        minimum_watts: u16_at(data, 3),
        maximum_watts: u16_at(data, 5),
        average_watts: u16_at(data, 7),
        timestamp: u32_at(data, 9),
        period_ms: u32_at(data, 13),
        active: data[17] & 0x40 != 0,
    })
}

/// Decodes Get Power Limit's response data (completion code 00h: a limit is active): DCh,
/// reserved (2), exception actions (1), power limit in watts (2), correction time (4),
/// reserved (2), statistics sampling period (2). Returns the limit in watts.
pub fn decode_power_limit(data: &[u8]) -> Result<u16, DecodeError> {
    check(data, 14)?;
    Ok(u16_at(data, 4))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A BMC measuring 245 W now, 180..310 W and 240 W on average over the last 60 s.
    pub(crate) const READING: [u8; 18] = [
        0xDC, // group extension id
        0xF5, 0x00, // current 245 W
        0xB4, 0x00, // minimum 180 W
        0x36, 0x01, // maximum 310 W
        0xF0, 0x00, // average 240 W
        0x78, 0x56, 0x34, 0x12, // timestamp 0x12345678
        0x60, 0xEA, 0x00, 0x00, // period 60 000 ms
        0x40, // state: power measurement active
    ];

    #[test]
    fn requests_follow_the_dcmi_layout() {
        assert_eq!(power_reading_request(), [0xDC, 0x01, 0x00, 0x00]);
        assert_eq!(power_limit_request(), [0xDC, 0x00, 0x00]);
    }

    #[test]
    fn a_power_reading_decodes_little_endian() {
        let r = decode_power_reading(&READING).unwrap();
        assert_eq!(
            r,
            PowerReading {
                current_watts: 245,
                minimum_watts: 180,
                maximum_watts: 310,
                average_watts: 240,
                timestamp: 0x1234_5678,
                period_ms: 60_000,
                active: true,
            }
        );
    }

    #[test]
    fn an_inactive_measurement_is_flagged() {
        let mut d = READING;
        d[17] = 0x00;
        assert!(!decode_power_reading(&d).unwrap().active);
    }

    #[test]
    fn short_or_foreign_answers_are_errors() {
        assert_eq!(
            decode_power_reading(&READING[..17]),
            Err(DecodeError::Short(17, 18))
        );
        let mut d = READING;
        d[0] = 0xDD;
        assert_eq!(decode_power_reading(&d), Err(DecodeError::NotDcmi(0xDD)));
        assert_eq!(decode_power_reading(&[]), Err(DecodeError::Short(0, 18)));
    }

    /// A 450 W limit, hard power off when exceeded for over a second.
    pub(crate) const LIMIT: [u8; 14] = [
        0xDC, 0x00, 0x00, // id, reserved
        0x01, // exception action: hard power off
        0xC2, 0x01, // 450 W
        0xE8, 0x03, 0x00, 0x00, // correction time 1000 ms
        0x00, 0x00, // reserved
        0x0A, 0x00, // sampling period 10 s
    ];

    #[test]
    fn a_power_limit_decodes() {
        let d = LIMIT;
        assert_eq!(decode_power_limit(&d), Ok(450));
        assert_eq!(
            decode_power_limit(&d[..13]),
            Err(DecodeError::Short(13, 14))
        );
    }
}
