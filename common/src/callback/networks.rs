//! Where a callback may be sent. Only `http` and `https`, and never to loopback, link-local
//! (169.254.0.0/16, where cloud metadata services answer, and fe80::/10), private, shared
//! (CGNAT), multicast, broadcast or unspecified addresses unless the operator allows a range in
//! `FJORD_CALLBACK_ALLOW_NETS`. The gateway checks a target at intake and the dispatcher checks
//! every address it connects to, so a name that later resolves elsewhere (DNS rebinding) is
//! still refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

use url::Url;

use crate::Error;

/// An address range, `10.0.0.0/8` or `fd00::/8`; a bare address is a range of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, unmap(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Net {
    type Err = Error;
    fn from_str(text: &str) -> Result<Net, Error> {
        let bad = || {
            Error::invalid(
                "FJORD_CALLBACK_ALLOW_NETS",
                format!("{text:?} is not an address range such as 10.0.0.0/8"),
            )
        };
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
        };
        Ok(Net { addr, prefix })
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:127.0.0.1`) are judged as the IPv4 address they carry.
fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Why an address is refused unless allowed; `None` for a public address.
pub fn restricted(ip: IpAddr) -> Option<&'static str> {
    match unmap(ip) {
        IpAddr::V4(v4) => restricted_v4(v4),
        IpAddr::V6(v6) => restricted_v6(v6),
    }
}

fn restricted_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_unspecified() || a == 0 {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_link_local() {
        Some("link-local (cloud metadata)")
    } else if ip.is_private() {
        Some("private")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (CGNAT)")
    } else if ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        Some("multicast, broadcast or reserved")
    } else {
        None
    }
}

fn restricted_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_unspecified() {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if first & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if first & 0xfe00 == 0xfc00 {
        Some("private (unique local)")
    } else if ip.is_multicast() {
        Some("multicast")
    } else {
        None
    }
}

/// The operator's exceptions to the refused ranges.
#[derive(Clone, Debug, Default)]
pub struct Networks {
    allow: Vec<Net>,
}

impl Networks {
    /// Parses `FJORD_CALLBACK_ALLOW_NETS`: ranges separated by commas or spaces.
    pub fn parse(list: &str) -> Result<Networks, Error> {
        let allow = list
            .split([',', ' '])
            .filter(|s| !s.trim().is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        Ok(Networks { allow })
    }

    /// `Err(reason)` when a callback may not connect to `ip`.
    pub fn permit(&self, ip: IpAddr) -> Result<(), String> {
        match restricted(ip) {
            Some(why) if !self.allow.iter().any(|n| n.contains(ip)) => Err(format!(
                "{ip} is a {why} address (allow it with FJORD_CALLBACK_ALLOW_NETS)"
            )),
            _ => Ok(()),
        }
    }

    /// Checks a callback URL: http or https, a host, and every address the host resolves to
    /// permitted. Used at intake; the dispatcher checks again at connect time.
    pub async fn check_url(&self, text: &str) -> Result<Url, String> {
        let url = check_syntax(text)?;
        for ip in resolve(&url).await? {
            self.permit(ip)?;
        }
        Ok(url)
    }
}

/// The URL's own rules, without resolving anything.
pub fn check_syntax(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("{text:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("scheme {:?} is not http or https", url.scheme()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("no host".into());
    }
    Ok(url)
}

/// The addresses a URL's host stands for (a literal address is itself).
pub async fn resolve(url: &Url) -> Result<Vec<IpAddr>, String> {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => Ok(vec![IpAddr::V4(ip)]),
        Some(url::Host::Ipv6(ip)) => Ok(vec![IpAddr::V6(ip)]),
        Some(url::Host::Domain(name)) => resolve_name(name).await,
        None => Err("no host".into()),
    }
}

/// Resolves a host name (bounded: 5 s).
pub async fn resolve_name(name: &str) -> Result<Vec<IpAddr>, String> {
    let lookup = tokio::net::lookup_host((name, 0));
    let found = tokio::time::timeout(Duration::from_secs(5), lookup)
        .await
        .map_err(|_| format!("resolving {name} timed out"))?
        .map_err(|e| format!("{name} does not resolve: {e}"))?;
    let ips: Vec<IpAddr> = found.map(|a| a.ip()).collect();
    if ips.is_empty() {
        return Err(format!("{name} has no addresses"));
    }
    Ok(ips)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn refused_ranges() {
        for refused in [
            "127.0.0.1",
            "127.9.9.9",
            "169.254.169.254",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(restricted(ip(refused)).is_some(), "{refused}");
        }
        for public in [
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2001:db8::1",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(restricted(ip(public)), None, "{public}");
        }
    }

    #[test]
    fn allowed_ranges_are_exceptions() {
        let nets = Networks::parse("127.0.0.0/8, fd00::/8 10.0.0.5").unwrap();
        assert!(nets.permit(ip("127.0.0.2")).is_ok());
        assert!(nets.permit(ip("::ffff:127.0.0.1")).is_ok());
        assert!(nets.permit(ip("fd12::1")).is_ok());
        assert!(nets.permit(ip("10.0.0.5")).is_ok());
        assert!(nets.permit(ip("10.0.0.6")).is_err());
        assert!(nets.permit(ip("169.254.169.254")).is_err());
        assert!(nets.permit(ip("::1")).is_err());
        assert!(Networks::parse("10.0.0.0/33").is_err());
        assert!(Networks::parse("ten").is_err());
        assert!(
            Networks::parse("")
                .unwrap()
                .permit(ip("127.0.0.1"))
                .is_err()
        );
        assert!("0.0.0.0/0".parse::<Net>().unwrap().contains(ip("9.9.9.9")));
    }

    #[test]
    fn syntax() {
        assert!(check_syntax("https://example.com/hook").is_ok());
        assert!(check_syntax("ftp://example.com/").is_err());
        assert!(check_syntax("file:///etc/passwd").is_err());
        assert!(check_syntax("not a url").is_err());
    }
}
