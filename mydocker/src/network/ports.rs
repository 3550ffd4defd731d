// @stage 9
//! `-p [IP:]HOST:CTR[/tcp|/udp]`: a port of the host, published for a
//! port of the container.
//!
//! Read and checked before anything is made, like `-v`: a wrong `-p` must
//! leave no veth, no address and no rule behind. Docker also takes `-p 80`
//! (it picks a free host port) and ranges (`-p 8000-8010:80-90`); we ask
//! for one explicit host port per mapping, so that the rule that publishes
//! it can be read off the command line.

use std::fmt;
use std::net::Ipv4Addr;

use anyhow::{anyhow, Result};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub struct PortMapping {
    /// Only this address of the host; None: all of them.
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

/// What `-p` takes, for the error messages.
const FORM: &str = "expected [IP:]HOST:CTR[/tcp|/udp], e.g. 8080:80";

// ANCHOR: display
/// `tcp` or `udp`: as `-p`, `iptables -p` and `docker ps` write it.
impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// As `docker ps` shows it: `0.0.0.0:8080->80/tcp`.
impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let ip = self.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        write!(
            f,
            "{ip}:{}->{}/{}",
            self.host_port, self.container_port, self.protocol
        )
    }
}
// ANCHOR_END: display

impl PortMapping {
    /// Would both take the same packets? The same host port and protocol,
    /// on the same address, or on all of them (`8080:80` covers
    /// `127.0.0.1:8080:80`). Two such mappings cannot both be served.
    pub fn overlaps(&self, other: &PortMapping) -> bool {
        self.host_port == other.host_port
            && self.protocol == other.protocol
            && match (self.host_ip, other.host_ip) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

// ANCHOR: parse_ports
/// Every `-p` of a `run`. A host port given twice is refused here: only
/// one of two rules for it would ever match.
pub fn parse_ports(specs: &[String]) -> Result<Vec<PortMapping>> {
    let mut ports: Vec<(&String, PortMapping)> = Vec::new();
    for spec in specs {
        let port = parse(spec)?;
        if let Some((first, _)) = ports.iter().find(|(_, p)| p.overlaps(&port))
        {
            return Err(anyhow!(
                "-p {first} and -p {spec} both publish host port {}/{}",
                port.host_port,
                port.protocol
            ));
        }
        ports.push((spec, port));
    }
    Ok(ports.into_iter().map(|(_, port)| port).collect())
}
// ANCHOR_END: parse_ports

// ANCHOR: parse
/// Read one `[IP:]HOST:CTR[/tcp|/udp]`.
pub fn parse(spec: &str) -> Result<PortMapping> {
    let invalid = |why: String| anyhow!("invalid -p {spec:?}: {why}; {FORM}");
    let (ports, protocol) = match spec.rsplit_once('/') {
        Some((ports, "tcp")) => (ports, Protocol::Tcp),
        Some((ports, "udp")) => (ports, Protocol::Udp),
        Some((_, other)) => {
            return Err(invalid(format!("unknown protocol {other:?}")))
        }
        None => (spec, Protocol::Tcp),
    };
    let (ip, host, container) = match ports.split(':').collect::<Vec<_>>()[..] {
        [_] => {
            let why = "no host port (Docker would pick one; mydocker needs \
                       HOST:CTR)";
            return Err(invalid(why.to_string()));
        }
        [host, container] => (None, host, container),
        [ip, host, container] => (Some(ip), host, container),
        _ => return Err(invalid("too many ':' (IPv4 only)".to_string())),
    };
    let host_ip = match ip {
        None => None,
        Some(ip) => match ip.parse::<Ipv4Addr>() {
            // 0.0.0.0 is "every address", which a rule says by omitting -d.
            Ok(ip) if ip.is_unspecified() => None,
            Ok(ip) => Some(ip),
            Err(_) => {
                return Err(invalid(format!("{ip:?} is not an IPv4 address")))
            }
        },
    };
    Ok(PortMapping {
        host_ip,
        host_port: port("host", host).map_err(invalid)?,
        container_port: port("container", container).map_err(invalid)?,
        protocol,
    })
}

/// A port number, 1 to 65535, written in decimal digits only.
fn port(side: &str, text: &str) -> Result<u16, String> {
    if text.contains('-') {
        return Err(format!("{side} port {text:?}: ranges are not supported"));
    }
    match text.parse::<u16>() {
        Ok(port) if port > 0 && text.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(port)
        }
        _ => Err(format!("{side} port {text:?} is not a number 1..=65535")),
    }
}
// ANCHOR_END: parse

#[cfg(test)]
mod tests {
    use super::*;

    fn ports(specs: &[&str]) -> Result<Vec<PortMapping>> {
        parse_ports(&specs.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn error(spec: &str) -> String {
        parse(spec).unwrap_err().to_string()
    }

    #[test]
    fn reads_docker_forms() {
        let tcp = |host_ip, host_port, container_port| PortMapping {
            host_ip,
            host_port,
            container_port,
            protocol: Protocol::Tcp,
        };
        let local = Some(Ipv4Addr::LOCALHOST);
        assert_eq!(parse("8080:80").unwrap(), tcp(None, 8080, 80));
        assert_eq!(parse("8080:80/tcp").unwrap(), tcp(None, 8080, 80));
        assert_eq!(parse("127.0.0.1:1:65535").unwrap(), tcp(local, 1, 65535));
        assert_eq!(parse("0.0.0.0:8080:80").unwrap(), tcp(None, 8080, 80));
        let udp = parse("10.0.0.1:53:5353/udp").unwrap();
        assert_eq!(udp.host_ip, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!((udp.host_port, udp.container_port), (53, 5353));
        assert_eq!(udp.protocol, Protocol::Udp);
    }

    #[test]
    fn displays_as_docker_ps() {
        let shown = |spec: &str| parse(spec).unwrap().to_string();
        assert_eq!(shown("8080:80"), "0.0.0.0:8080->80/tcp");
        assert_eq!(shown("127.0.0.1:53:53/udp"), "127.0.0.1:53->53/udp");
    }

    #[test]
    fn refuses_what_is_not_a_mapping() {
        for (spec, why) in [
            ("80", "no host port (Docker would pick one"),
            ("80/udp", "no host port"),
            ("0:80", "host port \"0\" is not a number 1..=65535"),
            ("8080:0", "container port \"0\""),
            ("65536:80", "host port \"65536\""),
            ("8080:99999", "container port \"99999\""),
            ("http:80", "host port \"http\""),
            ("+80:80", "host port \"+80\""),
            (":80", "host port \"\""),
            ("8080:", "container port \"\""),
            ("8000-8010:80", "ranges are not supported"),
            ("8080:80-81", "ranges are not supported"),
            ("1.2.3:80:80", "\"1.2.3\" is not an IPv4 address"),
            ("localhost:80:80", "\"localhost\" is not an IPv4 address"),
            (":8080:80", "\"\" is not an IPv4 address"),
            ("::1:80:80", "too many ':'"),
            ("8080:80/sctp", "unknown protocol \"sctp\""),
            ("8080:80/TCP", "unknown protocol \"TCP\""),
            ("8080:80/", "unknown protocol \"\""),
            ("", "no host port"),
        ] {
            let error = error(spec);
            assert!(error.contains(why), "{spec}: {error}");
            assert!(error.starts_with(&format!("invalid -p {spec:?}: ")));
            assert!(error.ends_with(FORM), "{error}");
            assert!(!error.contains('\n'), "{error}");
        }
    }

    #[test]
    fn refuses_a_host_port_twice() {
        for specs in [
            ["8080:80", "8080:81"],
            ["8080:80", "8080:80/tcp"],
            ["127.0.0.1:8080:80", "127.0.0.1:8080:81"],
            ["8080:80", "127.0.0.1:8080:81"],
            ["127.0.0.1:8080:80", "0.0.0.0:8080:81"],
            ["53:53/udp", "53:54/udp"],
        ] {
            let error = ports(&specs).unwrap_err().to_string();
            let expected =
                format!("-p {} and -p {} both publish", specs[0], specs[1]);
            assert!(error.starts_with(&expected), "{error}");
        }
    }

    #[test]
    fn takes_distinct_mappings_in_order() {
        let specs = [
            "8080:80",
            "8080:80/udp",
            "127.0.0.1:8081:80",
            "10.0.0.1:8081:80",
            "8082:80",
        ];
        let shown: Vec<String> = ports(&specs)
            .unwrap()
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(
            shown,
            [
                "0.0.0.0:8080->80/tcp",
                "0.0.0.0:8080->80/udp",
                "127.0.0.1:8081->80/tcp",
                "10.0.0.1:8081->80/tcp",
                "0.0.0.0:8082->80/tcp",
            ]
        );
        assert!(ports(&[]).unwrap().is_empty());
    }
}
// @end
