//! Which addresses the broker may call: the guard against URLs that point into its own network.
//!
//! Instance URLs, issuers, the endpoints a discovery document names and the cluster a provider reports
//! all come from outside the code. On AWS, one naming `169.254.169.254` would send a request (with a
//! client secret or a token) to the instance metadata service, and one naming a private address into
//! the VPC. So every provider call is checked twice: the URL when it is accepted (an app registration,
//! the catalogue), and each address at connection time, after DNS, because a name can resolve
//! differently later (DNS rebinding). Only public unicast addresses pass; local runs and the tests,
//! whose providers are simulators on loopback, allow loopback as well, and nothing else.

use crate::domain::ProviderSettings;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use url::{Host, Url};

/// How long a registration waits for DNS before accepting a name it could not resolve.
pub const REGISTRATION_LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// What kind of address an IP is, as far as calling it is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// Globally routable unicast.
    Public,
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// 10/8, 172.16/12, 192.168/16, and the deprecated IPv6 site-local fec0::/10.
    Private,
    /// 100.64.0.0/10, carrier-grade NAT: private in practice.
    SharedNat,
    /// 169.254.0.0/16 (the instance metadata service lives here), fe80::/10.
    LinkLocal,
    /// fc00::/7.
    UniqueLocal,
    /// 0.0.0.0/8, ::. Connecting to it reaches the local host.
    Unspecified,
    /// 255.255.255.255.
    Broadcast,
    /// 224.0.0.0/4, ff00::/8.
    Multicast,
    /// Documentation, benchmarking, protocol-assignment and reserved blocks: never a provider.
    Reserved,
}

impl AddressClass {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Self::Public => "a public address",
            Self::Loopback => "a loopback address",
            Self::Private => "a private network address",
            Self::SharedNat => "a carrier-grade NAT (shared) address",
            Self::LinkLocal => {
                "a link-local address (the cloud instance metadata service lives there)"
            }
            Self::UniqueLocal => "a unique-local (private) IPv6 address",
            Self::Unspecified => "the unspecified address",
            Self::Broadcast => "the broadcast address",
            Self::Multicast => "a multicast address",
            Self::Reserved => "a reserved or documentation address",
        }
    }
}

/// The class of an address. IPv6 forms that carry an IPv4 address (mapped, compatible, NAT64, 6to4)
/// take the class of the IPv4 address they lead to.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, c, _] = ip.octets();
    match (a, b, c) {
        _ if ip.is_broadcast() => AddressClass::Broadcast,
        (0, _, _) => AddressClass::Unspecified,
        (127, _, _) => AddressClass::Loopback,
        (10, _, _) | (172, 16..=31, _) | (192, 168, _) => AddressClass::Private,
        (100, 64..=127, _) => AddressClass::SharedNat,
        (169, 254, _) => AddressClass::LinkLocal,
        (224..=239, _, _) => AddressClass::Multicast,
        (240..=255, _, _) => AddressClass::Reserved,
        // Protocol assignments, TEST-NET-1/2/3, the 6to4 relay anycast, benchmarking.
        (192, 0, 0) | (192, 0, 2) | (198, 51, 100) | (203, 0, 113) | (192, 88, 99) => {
            AddressClass::Reserved
        }
        (198, 18..=19, _) => AddressClass::Reserved,
        _ => AddressClass::Public,
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let s = ip.segments();
    if ip.is_unspecified() {
        return AddressClass::Unspecified;
    }
    if ip.is_loopback() {
        return AddressClass::Loopback;
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s {
        // IPv4-compatible (::a.b.c.d, deprecated, still routed to IPv4 by some stacks).
        [0, 0, 0, 0, 0, 0, hi, lo] => classify_v4(embedded(hi, lo)),
        // NAT64 well-known prefix: a translator forwards to the IPv4 address inside.
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => classify_v4(embedded(hi, lo)),
        // 6to4: the IPv4 address is bits 16..48.
        [0x2002, hi, lo, ..] => match classify_v4(embedded(hi, lo)) {
            AddressClass::Public => AddressClass::Public,
            _ => AddressClass::Reserved,
        },
        _ => match s[0] {
            0xfc00..=0xfdff => AddressClass::UniqueLocal,
            0xfe80..=0xfebf => AddressClass::LinkLocal,
            0xfec0..=0xfeff => AddressClass::Private,
            0xff00..=0xffff => AddressClass::Multicast,
            // Documentation, and the IETF protocol-assignment block (Teredo tunnels included).
            0x2001 if s[1] == 0x0db8 || s[1] < 0x0200 => AddressClass::Reserved,
            // Only 2000::/3 is global unicast; the rest (local-use NAT64, discard-only, ...) is not.
            0x2000..=0x3fff => AddressClass::Public,
            _ => AddressClass::Reserved,
        },
    }
}

/// Which addresses provider calls may reach.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AddressPolicy {
    /// Public addresses only: what runs on AWS.
    #[default]
    PublicOnly,
    /// Public addresses and loopback: the local runner and the tests, whose providers are simulators
    /// on this machine. Private and link-local addresses stay refused.
    AllowLoopback,
}

impl AddressPolicy {
    pub fn allows(self, ip: IpAddr) -> bool {
        match classify(ip) {
            AddressClass::Public => true,
            AddressClass::Loopback => self == Self::AllowLoopback,
            _ => false,
        }
    }

    /// Refuses an address this policy does not allow.
    pub fn check_ip(self, host: &str, ip: IpAddr) -> Result<(), AddressRefused> {
        if self.allows(ip) {
            return Ok(());
        }
        Err(AddressRefused {
            host: host.to_string(),
            address: Some(ip),
            class: classify(ip),
        })
    }

    /// Checks an IP-literal host; names pass (the provider HTTP client checks what they resolve to,
    /// with [`GuardedResolver`]).
    pub fn check_ip_literal(self, url: &Url) -> Result<(), AddressRefused> {
        match url.host() {
            Some(Host::Ipv4(ip)) => self.check_ip(&ip.to_string(), IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => self.check_ip(&format!("[{ip}]"), IpAddr::V6(ip)),
            Some(Host::Domain(_)) | None => Ok(()),
        }
    }

    /// Checks a URL without looking anything up: an IP-literal host must be allowed, and a
    /// `localhost` name needs [`AddressPolicy::AllowLoopback`]. Other names pass here; they are checked
    /// by [`AddressPolicy::check_url`] and, at connection time, by [`GuardedResolver`].
    pub fn check_url_literal(self, url: &Url) -> Result<(), AddressRefused> {
        match url.host() {
            Some(Host::Domain(name)) if is_localhost_name(name) && self == Self::PublicOnly => {
                Err(AddressRefused {
                    host: name.to_string(),
                    address: None,
                    class: AddressClass::Loopback,
                })
            }
            _ => self.check_ip_literal(url),
        }
    }

    /// Checks a URL where it is accepted (an app registration): the literal check, then the host's
    /// addresses, looked up within `timeout`. A name that resolves only to refused addresses is
    /// refused; one that does not resolve now is reported, not refused (it may be set up later, and
    /// every call checks again).
    pub async fn check_url(
        self,
        url: &Url,
        timeout: Duration,
    ) -> Result<HostCheck, AddressRefused> {
        self.check_url_literal(url)?;
        let Some(Host::Domain(name)) = url.host() else {
            return Ok(HostCheck::Allowed);
        };
        match lookup(name, timeout).await {
            Ok(addresses) => self
                .keep_allowed(name, addresses)
                .map(|_| HostCheck::Allowed),
            Err(detail) => Ok(HostCheck::Unresolved { detail }),
        }
    }

    /// Checks the URLs an app registration names (an Acumatica instance URL), where it is accepted.
    pub async fn check_registration(
        self,
        settings: &ProviderSettings,
    ) -> Result<HostCheck, AddressRefused> {
        match settings {
            ProviderSettings::Acumatica { instance_url, .. } => {
                self.check_url(instance_url.as_url(), REGISTRATION_LOOKUP_TIMEOUT)
                    .await
            }
            // Their addresses come from the catalogue, checked when it is loaded.
            ProviderSettings::Twinfield
            | ProviderSettings::ExactOnline { .. }
            | ProviderSettings::Generic { .. } => Ok(HostCheck::Allowed),
        }
    }

    /// The allowed ones among a name's addresses; refused when none is.
    fn keep_allowed(
        self,
        name: &str,
        addresses: Vec<SocketAddr>,
    ) -> Result<Vec<SocketAddr>, AddressRefused> {
        let refused = addresses.iter().find(|a| !self.allows(a.ip())).copied();
        let allowed: Vec<SocketAddr> = addresses
            .into_iter()
            .filter(|a| self.allows(a.ip()))
            .collect();
        match refused {
            Some(refused) if allowed.is_empty() => Err(AddressRefused {
                host: name.to_string(),
                address: Some(refused.ip()),
                class: classify(refused.ip()),
            }),
            _ => Ok(allowed),
        }
    }
}

/// `localhost` and its subdomains always mean this machine (RFC 6761), whatever DNS says.
fn is_localhost_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

async fn lookup(name: &str, timeout: Duration) -> Result<Vec<SocketAddr>, String> {
    match tokio::time::timeout(timeout, tokio::net::lookup_host((name, 0))).await {
        // No address is a DNS answer to retry, not an address to refuse.
        Ok(Ok(addresses)) => Some(addresses.collect::<Vec<_>>())
            .filter(|found| !found.is_empty())
            .ok_or_else(|| format!("{name} resolved to no address")),
        Ok(Err(e)) => Err(format!("{name} could not be resolved: {e}")),
        Err(_) => Err(format!(
            "{name} could not be resolved within {} s",
            timeout.as_secs_f32()
        )),
    }
}

/// The outcome of a registration-time check that did not refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostCheck {
    Allowed,
    /// The name did not resolve now; each call checks its addresses again.
    Unresolved {
        detail: String,
    },
}

/// A URL or address the broker refuses to call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct AddressRefused {
    /// The host as the URL names it.
    pub host: String,
    /// The refused address, when the host is an address or resolved to one.
    pub address: Option<IpAddr>,
    pub class: AddressClass,
}

impl std::fmt::Display for AddressRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.address {
            Some(ip) if ip.to_string() != self.host.trim_matches(['[', ']']) => {
                format!("{} resolves to {ip}, {}", self.host, self.class.describe())
            }
            Some(_) => format!("{} is {}", self.host, self.class.describe()),
            None if self.class == AddressClass::Loopback => {
                format!("{} names this machine", self.host)
            }
            None => format!("{} is {}", self.host, self.class.describe()),
        };
        write!(
            f,
            "{what}: the broker calls providers only at public addresses, so that a configured URL \
             cannot reach its own network or the cloud metadata service. Use the provider's public \
             https URL (check the app's instance URL or the provider catalogue entry)"
        )?;
        if self.class == AddressClass::Loopback {
            f.write_str("; loopback is allowed only in local runs (local-runner, broker-admin --allow-loopback on the embedded store)")?;
        }
        Ok(())
    }
}

/// The provider HTTP client's DNS resolver: the system's (through tokio), minus every address the
/// policy refuses. reqwest does not ask a resolver about IP-literal hosts: those are checked before a
/// request is sent ([`AddressPolicy::check_ip_literal`]).
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: AddressPolicy,
    timeout: Duration,
}

impl GuardedResolver {
    pub fn new(policy: AddressPolicy, timeout: Duration) -> Arc<Self> {
        Arc::new(Self { policy, timeout })
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let (policy, timeout) = (self.policy, self.timeout);
        let name = name.as_str().to_string();
        Box::pin(async move {
            let addresses = lookup(&name, timeout)
                .await
                .map_err(Box::<dyn std::error::Error + Send + Sync>::from)?;
            let allowed = policy.keep_allowed(&name, addresses)?;
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AddressClass::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn every_special_range_is_classified() {
        let table = [
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", Unspecified),
            ("127.0.0.1", Loopback),
            ("127.255.255.254", Loopback),
            ("10.0.0.1", Private),
            ("10.255.255.255", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.168.1.1", Private),
            ("100.64.0.1", SharedNat),
            ("100.127.255.255", SharedNat),
            ("169.254.169.254", LinkLocal),
            ("169.254.0.1", LinkLocal),
            ("224.0.0.1", Multicast),
            ("239.255.255.250", Multicast),
            ("240.0.0.1", Reserved),
            ("255.255.255.255", Broadcast),
            ("192.0.0.170", Reserved),
            ("192.0.2.1", Reserved),
            ("198.51.100.7", Reserved),
            ("203.0.113.9", Reserved),
            ("198.18.0.1", Reserved),
            ("::", Unspecified),
            ("::1", Loopback),
            ("fe80::1", LinkLocal),
            ("febf::1", LinkLocal),
            ("fec0::1", Private),
            ("fc00::1", UniqueLocal),
            ("fd12:3456::1", UniqueLocal),
            ("ff02::1", Multicast),
            ("2001:db8::1", Reserved),
            ("2001:0:4136:e378::1", Reserved), // Teredo
            ("100::1", Reserved),
            ("64:ff9b:1::1", Reserved),
            // IPv6 forms that lead to an IPv4 address take its class.
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:169.254.169.254", LinkLocal),
            ("::ffff:10.0.0.1", Private),
            ("::ffff:0.0.0.0", Unspecified),
            ("::127.0.0.1", Loopback),
            ("::10.1.2.3", Private),
            ("64:ff9b::a9fe:a9fe", LinkLocal),
            ("64:ff9b::192.168.0.1", Private),
            ("2002:a00:1::1", Reserved), // 6to4 of 10.0.0.1
            // Public addresses, including the edges of the private blocks.
            ("8.8.8.8", Public),
            ("1.1.1.1", Public),
            ("172.15.255.255", Public),
            ("172.32.0.1", Public),
            ("100.63.255.255", Public),
            ("100.128.0.1", Public),
            ("169.253.1.1", Public),
            ("192.169.0.1", Public),
            ("11.0.0.1", Public),
            ("223.255.255.254", Public),
            ("2606:4700:4700::1111", Public),
            ("2a00:1450:4001:80b::200e", Public),
            ("::ffff:8.8.8.8", Public),
            ("64:ff9b::808:808", Public),
            ("2002:808:808::1", Public), // 6to4 of 8.8.8.8
        ];
        for (address, class) in table {
            assert_eq!(classify(ip(address)), class, "{address}");
        }
    }

    #[test]
    fn only_public_passes_in_production_and_loopback_only_locally() {
        let production = AddressPolicy::default();
        let local = AddressPolicy::AllowLoopback;
        assert_eq!(production, AddressPolicy::PublicOnly);
        for public in ["8.8.8.8", "2606:4700:4700::1111"] {
            assert!(production.allows(ip(public)) && local.allows(ip(public)));
        }
        for loopback in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            assert!(!production.allows(ip(loopback)), "{loopback}");
            assert!(local.allows(ip(loopback)), "{loopback}");
        }
        for refused in [
            "10.0.0.1",
            "169.254.169.254",
            "::ffff:169.254.169.254",
            "100.64.0.1",
            "fd00::1",
            "fe80::1",
            "0.0.0.0",
            "::",
            "224.0.0.1",
        ] {
            assert!(!production.allows(ip(refused)), "{refused}");
            assert!(!local.allows(ip(refused)), "{refused}");
        }
    }

    #[test]
    fn literal_urls_and_localhost_names_are_checked_without_dns() {
        let production = AddressPolicy::PublicOnly;
        let url = |s: &str| Url::parse(s).unwrap();
        for refused in [
            "https://169.254.169.254/latest/meta-data",
            "https://10.0.0.1/",
            "https://[::ffff:127.0.0.1]/",
            "https://[::ffff:a9fe:a9fe]/",
            "http://127.0.0.1:8080/",
            "https://localhost/",
            "https://LOCALHOST./",
            "https://api.localhost/",
            // The URL parser reads these as IPv4 literals.
            "https://0x7f000001/",
            "https://2130706433/",
        ] {
            assert!(
                production.check_url_literal(&url(refused)).is_err(),
                "{refused}"
            );
        }
        assert!(production
            .check_url_literal(&url("https://acme.acumatica.com/"))
            .is_ok());
        assert!(AddressPolicy::AllowLoopback
            .check_url_literal(&url("http://localhost:9000/"))
            .is_ok());
        let err = AddressPolicy::AllowLoopback
            .check_url_literal(&url("https://[fd00::1]/"))
            .unwrap_err();
        assert_eq!(err.class, UniqueLocal);
    }

    #[test]
    fn a_refusal_says_what_was_refused_and_what_to_do() {
        let err = AddressPolicy::PublicOnly
            .check_url_literal(&Url::parse("https://169.254.169.254/").unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("169.254.169.254 is a link-local address"),
            "{err}"
        );
        assert!(err.contains("public https URL"), "{err}");
        let err = AddressPolicy::PublicOnly
            .keep_allowed("idp.example.com", vec!["10.1.2.3:0".parse().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("idp.example.com resolves to 10.1.2.3"),
            "{err}"
        );
    }

    #[test]
    fn refused_addresses_are_dropped_and_a_name_with_none_left_is_refused() {
        let mixed: Vec<SocketAddr> = vec![
            "10.0.0.5:0".parse().unwrap(),
            "93.184.215.14:0".parse().unwrap(),
        ];
        assert_eq!(
            AddressPolicy::PublicOnly
                .keep_allowed("mixed.example.com", mixed)
                .unwrap(),
            vec!["93.184.215.14:0".parse::<SocketAddr>().unwrap()]
        );
        let only_loopback: Vec<SocketAddr> = vec!["127.0.0.1:0".parse().unwrap()];
        assert!(AddressPolicy::PublicOnly
            .keep_allowed("rebound.example.com", only_loopback.clone())
            .is_err());
        assert!(AddressPolicy::AllowLoopback
            .keep_allowed("rebound.example.com", only_loopback)
            .is_ok());
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused_at_registration() {
        // `localhost` resolves through the hosts file on any machine: what DNS gives is judged too,
        // not only the name.
        let addresses = lookup("localhost", Duration::from_secs(2)).await.unwrap();
        assert!(AddressPolicy::PublicOnly
            .keep_allowed("localhost", addresses.clone())
            .is_err());
        assert!(AddressPolicy::AllowLoopback
            .keep_allowed("localhost", addresses)
            .is_ok());
        let unresolved = AddressPolicy::PublicOnly
            .check_url(
                &Url::parse("https://no-such-host.invalid/").unwrap(),
                Duration::from_secs(2),
            )
            .await
            .unwrap();
        assert!(matches!(unresolved, HostCheck::Unresolved { .. }));
    }
}
