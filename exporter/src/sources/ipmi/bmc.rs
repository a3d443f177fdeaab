//! The BMC link through `ipmi-rs`: in-band through the kernel's IPMI device (`/dev/ipmi0`,
//! `ipmi_devintf` + `ipmi_si`) or out-of-band over LAN (RMCP+ where the BMC offers it, IPMI 1.5
//! sessions otherwise, as `ipmi-rs` negotiates). Every call is blocking with the configured
//! timeout; the poller runs on its own thread.

use std::path::Path;
use std::time::Duration;

use ipmi_rs::connection::{
    IpmiCommand, IpmiConnection, LogicalUnit, Message, Request, RequestTargetAddress,
};
use ipmi_rs::rmcp::{ActivationError, Rmcp};
use ipmi_rs::sensor_event::{GetSensorReading, ThresholdReading};
use ipmi_rs::storage::sdr::record::{
    DataFormat, IdentifiableSensor, Linearization, RecordContents, SensorKey,
};
use ipmi_rs::storage::sdr::{SdrRecordInfo, Unit};
use ipmi_rs::{File, Ipmi, IpmiError};

use super::sensors::{Candidate, Conversion};

/// Why a call failed.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    /// No answer or a broken session (timeout, socket error): reconnect.
    Link(String),
    /// The BMC answered with a completion code other than 00h (the code where the call was raw).
    Refused(Option<u8>, String),
    /// The BMC answered with data that does not parse.
    Garbled(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Link(e) => write!(f, "{e}"),
            CallError::Refused(_, e) => write!(f, "refused: {e}"),
            CallError::Garbled(e) => write!(f, "unparsable answer: {e}"),
        }
    }
}

/// IPMI 2.0 Table 5-2, the completion codes a BMC gives for power queries.
fn cc_name(cc: u8) -> &'static str {
    match cc {
        0xC0 => "node busy",
        0xC1 => "invalid command",
        0xC3 => "timeout",
        0xC9 => "parameter out of range",
        0xCB => "requested sensor, data or record not present",
        0xCD => "command illegal for sensor or record type",
        0xCE => "response could not be provided",
        0xD4 => "insufficient privilege",
        0xD5 => "not supported in present state",
        0xD6 => "sub-function disabled or unavailable",
        _ => "error",
    }
}

fn classify<C: std::fmt::Debug, P: std::fmt::Debug>(e: IpmiError<C, P>) -> CallError {
    match e {
        IpmiError::Connection(c) => CallError::Link(format!("{c:?}")),
        IpmiError::Failed {
            completion_code, ..
        } => CallError::Refused(None, format!("{completion_code:?}")),
        IpmiError::Command {
            completion_code: Some(cc),
            ..
        } => CallError::Refused(None, format!("{cc:?}")),
        other => CallError::Garbled(format!("{other:?}")),
    }
}

/// A watt sensor of the SDR and how to read it.
#[derive(Debug, Clone)]
pub struct PowerSensor {
    pub candidate: Candidate,
    pub key: SensorKey,
    pub conversion: Conversion,
}

pub enum Link {
    Device(Ipmi<File>),
    /// Boxed: a LAN session carries its crypto state (over a kilobyte).
    Lan(Box<Ipmi<Rmcp>>),
}

impl Link {
    /// Opens the kernel's IPMI device.
    pub fn device(path: &Path, timeout: Duration) -> Result<Self, String> {
        File::new(path, timeout)
            .map(|f| Link::Device(Ipmi::new(f)))
            .map_err(|e| format!("cannot open {}: {e} (load ipmi_devintf and ipmi_si; the container needs the device and root)", path.display()))
    }

    /// Opens a session with the BMC at `addr` (`host:port`).
    pub fn lan(addr: &str, user: &str, password: &str, timeout: Duration) -> Result<Self, String> {
        let mut rmcp = Rmcp::new(addr, timeout).map_err(|e| format!("BMC {addr}: {e}"))?;
        rmcp.activate(true, Some(user), Some(password.as_bytes()))
            .map_err(|e| format!("BMC {addr}: {}", activation_error(&e, user, timeout)))?;
        Ok(Link::Lan(Box::new(Ipmi::new(rmcp))))
    }

    fn call<C>(&mut self, cmd: C) -> Result<C::Output, CallError>
    where
        C: IpmiCommand,
        C::Error: std::fmt::Debug,
    {
        match self {
            Link::Device(i) => i.send_recv(cmd).map_err(classify),
            Link::Lan(i) => i.send_recv(cmd).map_err(classify),
        }
    }

    /// A command `ipmi-rs` has no type for (DCMI's group extension NetFn): the response data
    /// after a 00h completion code.
    pub fn raw(&mut self, netfn: u8, cmd: u8, data: Vec<u8>) -> Result<Vec<u8>, CallError> {
        let mut req = Request::new(
            Message::new_raw(netfn, cmd, data),
            RequestTargetAddress::Bmc(LogicalUnit::Zero),
        );
        let resp = match self {
            Link::Device(i) => i
                .inner_mut()
                .send_recv(&mut req)
                .map_err(|e| CallError::Link(format!("{e:?}")))?,
            Link::Lan(i) => i
                .inner_mut()
                .send_recv(&mut req)
                .map_err(|e| CallError::Link(format!("{e:?}")))?,
        };
        if resp.netfn_raw() != netfn | 1 || resp.cmd() != cmd {
            return Err(CallError::Garbled(format!(
                "answer to NetFn {netfn:#04x} cmd {cmd:#04x} came as NetFn {:#04x} cmd {:#04x}",
                resp.netfn_raw(),
                resp.cmd()
            )));
        }
        match resp.cc() {
            0 => Ok(resp.data().to_vec()),
            cc => Err(CallError::Refused(
                Some(cc),
                format!("completion code {cc:#04x} ({})", cc_name(cc)),
            )),
        }
    }

    /// Every linear, analog full sensor record in watts. A record that does not parse is
    /// skipped; a broken link is an error, not a short list.
    pub fn power_sensors(&mut self) -> Result<Vec<PowerSensor>, CallError> {
        let mut found = Vec::new();
        let mut reservation = None;
        let mut id = 0x0000;
        // 0xFFFF ends the repository; the bound stops a BMC whose chain loops.
        for _ in 0..4096 {
            if id == 0xFFFF {
                break;
            }
            let (next, record) = match self.sdr_record(id, &mut reservation) {
                Ok(r) => r,
                // CBh on the first record: the repository is empty.
                Err(CallError::Refused(Some(0xCB), _)) if id == 0 => break,
                Err(e) => return Err(e),
            };
            let mut data = next.to_le_bytes().to_vec();
            data.extend(&record);
            match SdrRecordInfo::parse(&data) {
                Ok(r) => found.extend(power_sensor(&r.record.contents)),
                Err(e) => {
                    tracing::debug!(record = id, error = ?e, "SDR record unparsable; skipped")
                }
            }
            if next == id {
                break;
            }
            id = next;
        }
        Ok(found)
    }

    /// Get SDR (IPMI 2.0 §33.12, Storage NetFn 0Ah, command 23h): the whole record in one read
    /// where the BMC can answer that, else the 5-byte header and then the body in 16-byte pieces
    /// under a reservation (Reserve SDR Repository, 22h), as ipmitool does. Returns the next
    /// record id and the record (header included).
    fn sdr_record(
        &mut self,
        id: u16,
        reservation: &mut Option<u16>,
    ) -> Result<(u16, Vec<u8>), CallError> {
        const STORAGE: u8 = 0x0A;
        let get = |res: u16, offset: u8, len: u8| {
            let mut d = res.to_le_bytes().to_vec();
            d.extend(id.to_le_bytes());
            d.extend([offset, len]);
            d
        };
        match self.raw(STORAGE, 0x23, get(0, 0, 0xFF)) {
            Ok(d) if d.len() >= 7 => {
                return Ok((u16::from_le_bytes([d[0], d[1]]), d[2..].to_vec()))
            }
            Ok(d) => return Err(CallError::Garbled(format!("Get SDR: {} bytes", d.len()))),
            // CAh "cannot return number of requested data bytes", C7h/C8h length: read in pieces
            Err(CallError::Refused(Some(0xCA | 0xC7 | 0xC8 | 0xFF), _)) => {}
            Err(e) => return Err(e),
        }
        for _attempt in 0..2 {
            let res = match *reservation {
                Some(r) => r,
                None => {
                    let d = self.raw(STORAGE, 0x22, Vec::new())?;
                    let r = u16::from_le_bytes([*d.first().unwrap_or(&0), *d.get(1).unwrap_or(&0)]);
                    *reservation = Some(r);
                    r
                }
            };
            match self.sdr_pieces(res, &get) {
                // C5h: the reservation was cancelled (the SDR changed): reserve again, once.
                Err(CallError::Refused(Some(0xC5), _)) => *reservation = None,
                other => return other,
            }
        }
        Err(CallError::Refused(
            Some(0xC5),
            "SDR reservation cancelled twice".into(),
        ))
    }

    fn sdr_pieces(
        &mut self,
        res: u16,
        get: &dyn Fn(u16, u8, u8) -> Vec<u8>,
    ) -> Result<(u16, Vec<u8>), CallError> {
        const STORAGE: u8 = 0x0A;
        let head = self.raw(STORAGE, 0x23, get(res, 0, 5))?;
        if head.len() < 7 {
            return Err(CallError::Garbled(format!(
                "Get SDR header: {} bytes",
                head.len()
            )));
        }
        let next = u16::from_le_bytes([head[0], head[1]]);
        let mut record = head[2..7].to_vec();
        let total = 5 + record[4] as usize;
        while record.len() < total {
            let n = (total - record.len()).min(16) as u8;
            let offset = u8::try_from(record.len())
                .map_err(|_| CallError::Garbled(format!("SDR record of {total} bytes")))?;
            let d = self.raw(STORAGE, 0x23, get(res, offset, n))?;
            if d.len() <= 2 {
                return Err(CallError::Garbled("Get SDR: empty piece".into()));
            }
            record.extend(&d[2..]);
        }
        record.truncate(total);
        Ok((next, record))
    }

    /// One sensor's reading in its unit; `Ok(None)` when the BMC has none: Get Sensor Reading
    /// (IPMI 2.0 §35.14) byte 2 bit 5 "reading unavailable", or bit 6 clear "sensor scanning
    /// disabled" (ipmitool shows both as "ns"), e.g. a supply that is not inserted.
    pub fn read(&mut self, s: &PowerSensor) -> Result<Option<f64>, CallError> {
        let raw = self.call(GetSensorReading::for_sensor_key(&s.key))?;
        let r: ThresholdReading = (&raw).into();
        if r.scanning_disabled {
            return Ok(None);
        }
        Ok(r.reading.map(|x| s.conversion.apply(x)))
    }
}

/// Says why a LAN session could not be opened, in the operator's words.
fn activation_error(e: &ActivationError, user: &str, timeout: Duration) -> String {
    use ipmi_rs::rmcp::{V1_5ActivationError as V1, V2_0ActivationError as V2};
    match e {
        ActivationError::PingSend(io) | ActivationError::PongReceive(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            format!("no answer within {timeout:?} (BMC down, or UDP blocked on the way)")
        }
        ActivationError::PingSend(io) | ActivationError::PongReceive(io) => {
            format!("no IPMI service: {io}")
        }
        ActivationError::V2_0(
            V2::ServerAuthenticationFailed
            | V2::RakpMessage2Validate(_)
            | V2::RakpMessage4Validate(_)
            | V2::RakpMessage4InvalidIntegrityCheckValue,
        ) => format!("RMCP+ authentication failed for user {user:?} (wrong user or password)"),
        ActivationError::V1_5(V1::GetSessionChallenge(_) | V1::ActivateSession(_)) => format!(
            "IPMI 1.5 session refused for user {user:?} (wrong user or password, or not allowed on this channel): {e:?}"
        ),
        _ => format!("cannot open a session as {user:?}: {e:?}"),
    }
}

fn power_sensor(contents: &RecordContents) -> Option<PowerSensor> {
    let RecordContents::FullSensor(full) = contents else {
        return None;
    };
    let common = contents.common_data()?;
    let units = &common.sensor_units;
    if units.base_unit != Unit::Watt || units.rate.is_some() || units.is_percentage {
        return None;
    }
    let signed = match full.analog_data_format? {
        DataFormat::Unsigned => false,
        DataFormat::TwosComplement => true,
        DataFormat::OnesComplement => return None,
    };
    if !matches!(full.linearization, Linearization::Linear) {
        tracing::debug!(sensor = %full.id_string(), "non-linear IPMI power sensor skipped");
        return None;
    }
    Some(PowerSensor {
        candidate: Candidate {
            name: full.id_string().to_string(),
            entity_id: full.entity_id(),
        },
        key: common.key,
        conversion: Conversion {
            m: full.m,
            b: full.b,
            b_exponent: full.b_exponent,
            result_exponent: full.result_exponent,
            signed,
        },
    })
}
