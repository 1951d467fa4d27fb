//! Where a webhook may be sent, decided before anything is dialled: the host
//! must be on the route's allow-list, and every address it stands for must
//! be public, or in a network the operator allowed. This is what keeps a
//! `Callback-Url` from reaching the gateway's own network (SSRF).

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};

pub(crate) use super::address::AddressPolicy;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::{Scheme, Uri};
use hyper_util::client::legacy::connect::dns::Name;

/// Longer URLs are refused: nobody needs them, and they end up in logs.
const MAX_URL_LENGTH: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub(crate) enum TargetError {
    #[error("callback URL is longer than {MAX_URL_LENGTH} bytes")]
    TooLong,
    #[error("callback URL is not an absolute http(s) URL")]
    Invalid,
    #[cfg(feature = "tls")]
    #[error("callback URL must be https:// or http://")]
    Scheme,
    #[cfg(not(feature = "tls"))]
    #[error("callback URL must be http:// (this build has no TLS client)")]
    Scheme,
    #[error("callback URL must not carry credentials")]
    Userinfo,
    #[error("this route takes no Callback-Url")]
    NotAccepted,
    #[error("callback host `{0}` is not on this route's allow-list")]
    HostNotAllowed(String),
    #[error("callback host stands for {0}, a private, loopback, link-local or otherwise non-public address")]
    AddressRefused(IpAddr),
    #[error("callback host `{0}` does not resolve")]
    Unresolvable(String, #[source] io::Error),
}

/// One entry of a route's `callback_hosts`: a host name, or `*.suffix` for
/// any name below it (not the suffix itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostPattern {
    Exact(String),
    Below(String),
}

impl HostPattern {
    pub(crate) fn parse(text: &str) -> Option<HostPattern> {
        let text = text.to_ascii_lowercase();
        let valid = |s: &str| {
            !s.is_empty()
                && s.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'[' | b']')
                })
        };
        match text.strip_prefix("*.") {
            Some(suffix) if valid(suffix) => Some(HostPattern::Below(format!(".{suffix}"))),
            None if valid(&text) => Some(HostPattern::Exact(text)),
            _ => None,
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h.eq_ignore_ascii_case(host),
            HostPattern::Below(suffix) => {
                host.len() > suffix.len()
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }
}

/// A callback URL that passed the checks that need no network.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    uri: Uri,
}

impl Target {
    /// Checks a URL against the allow-list (none: any host) and, when its
    /// host is an address, against the policy.
    pub(crate) fn parse(
        text: &str,
        hosts: Option<&[HostPattern]>,
        policy: &AddressPolicy,
    ) -> Result<Target, TargetError> {
        if text.len() > MAX_URL_LENGTH {
            return Err(TargetError::TooLong);
        }
        let uri: Uri = text.parse().map_err(|_| TargetError::Invalid)?;
        let authority = uri.authority().ok_or(TargetError::Invalid)?;
        match uri.scheme() {
            Some(s) if *s == Scheme::HTTP => {}
            #[cfg(feature = "tls")]
            Some(s) if *s == Scheme::HTTPS => {}
            Some(_) => return Err(TargetError::Scheme),
            None => return Err(TargetError::Invalid),
        }
        if authority.as_str().contains('@') {
            return Err(TargetError::Userinfo);
        }
        let target = Target { uri };
        let host = target.host();
        if host.is_empty() {
            return Err(TargetError::Invalid);
        }
        if let Some(hosts) = hosts {
            if !hosts.iter().any(|p| p.matches(host)) {
                return Err(TargetError::HostNotAllowed(host.to_owned()));
            }
        }
        if let Some(ip) = target.literal() {
            policy.check(ip).map_err(TargetError::AddressRefused)?;
        }
        Ok(target)
    }

    /// A URL checked when its job was submitted, read back from a store.
    pub(crate) fn restore(text: &str) -> Option<Target> {
        text.parse().ok().map(|uri| Target { uri })
    }

    /// The URL as the job keeps it.
    pub(crate) fn as_str(&self) -> String {
        self.uri.to_string()
    }

    pub(crate) fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The host without the brackets an IPv6 literal is written in.
    pub(crate) fn host(&self) -> &str {
        let host = self.uri.host().unwrap_or_default();
        host.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
    }

    fn literal(&self) -> Option<IpAddr> {
        self.host().parse().ok()
    }

    /// The URL without its query, which may hold a receiver's token: what
    /// the job document shows.
    pub(crate) fn shown(&self) -> String {
        format!(
            "{}://{}{}",
            self.uri.scheme_str().unwrap_or_default(),
            self.uri.authority().map_or("", |a| a.as_str()),
            self.uri.path()
        )
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Turns host names into addresses; tests give their own, so no test ever
/// needs a name that resolves to a private address.
pub(crate) trait Resolve: Send + Sync + 'static {
    fn resolve<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>>;
}

/// The names a webhook resolver keeps answers for, at most.
const DNS_CACHE_ENTRIES: usize = 1024;

/// How webhook hosts are resolved: the system's DNS configuration
/// (`/etc/resolv.conf`, and `/etc/hosts` first) queried from the runtime
/// itself, answers cached up to their TTL for at most
/// [`DNS_CACHE_ENTRIES`] names, each query bounded by the configuration's
/// timeout and attempts. getaddrinfo would hold a blocking thread per
/// lookup, as many as a burst of deliveries asks for. Without a usable
/// resolv.conf, the operating system's resolver after all.
pub(crate) fn system_resolver() -> Arc<dyn Resolve> {
    match hickory_resolver::TokioResolver::builder_tokio() {
        Ok(mut builder) => {
            let options = builder.options_mut();
            options.cache_size = DNS_CACHE_ENTRIES;
            options.use_hosts_file = hickory_resolver::config::ResolveHosts::Always;
            Arc::new(Dns(builder.build()))
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the system's DNS configuration; webhook hosts are resolved by getaddrinfo");
            Arc::new(SystemResolver)
        }
    }
}

struct Dns(hickory_resolver::TokioResolver);

impl Resolve for Dns {
    fn resolve<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        Box::pin(async move {
            let found = self.0.lookup_ip(host).await.map_err(io::Error::other)?;
            Ok(found.iter().collect())
        })
    }
}

/// The operating system's resolver (getaddrinfo, on a blocking thread).
struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host, 0))
                .await?
                .map(|a| a.ip())
                .collect())
        })
    }
}

/// A resolver whose answers are checked: a name any of whose addresses is
/// refused is refused whole, so no answer can slip a private one through.
#[derive(Clone)]
pub(crate) struct Guard {
    resolver: Arc<dyn Resolve>,
    policy: Arc<AddressPolicy>,
    timeout: Duration,
}

impl Guard {
    pub(crate) fn new(
        resolver: Arc<dyn Resolve>,
        policy: AddressPolicy,
        timeout: Duration,
    ) -> Guard {
        Guard {
            resolver,
            policy: Arc::new(policy),
            timeout,
        }
    }

    pub(crate) fn policy(&self) -> &AddressPolicy {
        &self.policy
    }

    /// Every address `host` stands for, once all are found acceptable.
    pub(crate) async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, TargetError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            self.policy.check(ip).map_err(TargetError::AddressRefused)?;
            return Ok(vec![ip]);
        }
        let unresolvable = |e| TargetError::Unresolvable(host.to_owned(), e);
        let addrs = tokio::time::timeout(self.timeout, self.resolver.resolve(host))
            .await
            .map_err(|_| unresolvable(io::ErrorKind::TimedOut.into()))?
            .map_err(unresolvable)?;
        if addrs.is_empty() {
            return Err(unresolvable(io::ErrorKind::NotFound.into()));
        }
        for ip in &addrs {
            self.policy
                .check(*ip)
                .map_err(TargetError::AddressRefused)?;
        }
        Ok(addrs)
    }
}

/// The guard as hyper-util's connector wants a resolver: the connector
/// dials only what this returns, so the addresses checked are the ones used.
impl tower::Service<Name> for Guard {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = TargetError;
    type Future = BoxFuture<'static, Result<Self::Response, TargetError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), TargetError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let guard = self.clone();
        Box::pin(async move {
            let addrs = guard.addresses(name.as_str()).await?;
            // The connector puts the URL's port in.
            Ok(addrs
                .into_iter()
                .map(|ip| SocketAddr::new(ip, 0))
                .collect::<Vec<_>>()
                .into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// The webhook resolver finds names in `/etc/hosts` (no query leaves
    /// the machine for them) and takes an address as it is.
    #[tokio::test]
    async fn the_system_resolver_reads_the_hosts_file_and_takes_addresses_as_they_are() {
        let resolver = system_resolver();
        let localhost = resolver.resolve("localhost").await.unwrap();
        assert!(
            localhost.contains(&IpAddr::from([127, 0, 0, 1])),
            "{localhost:?}"
        );
        let literal = resolver.resolve("127.0.0.2").await.unwrap();
        assert_eq!(literal, [IpAddr::from([127, 0, 0, 2])]);
    }

    /// Answers from a table; never touches the network.
    struct TableResolver(HashMap<&'static str, Vec<IpAddr>>);

    impl Resolve for TableResolver {
        fn resolve<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
            let found = self.0.get(host).cloned();
            Box::pin(async move { found.ok_or_else(|| io::ErrorKind::NotFound.into()) })
        }
    }

    fn guard(policy: AddressPolicy) -> Guard {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let table = HashMap::from([
            ("hooks.example.com", vec![ip("93.184.216.34")]),
            ("internal.example.com", vec![ip("10.1.2.3")]),
            ("metadata.example.com", vec![ip("169.254.169.254")]),
            (
                "mixed.example.com",
                vec![ip("93.184.216.34"), ip("192.168.1.1")],
            ),
            ("v6-metadata.example.com", vec![ip("fd00:ec2::254")]),
            ("mapped.example.com", vec![ip("::ffff:127.0.0.1")]),
            ("alibaba.example.com", vec![ip("100.100.100.200")]),
        ]);
        Guard::new(
            Arc::new(TableResolver(table)),
            policy,
            Duration::from_secs(1),
        )
    }

    #[test]
    fn hosts_must_be_on_the_allow_list() {
        let hosts = [
            HostPattern::parse("hooks.example.com").unwrap(),
            HostPattern::parse("*.example.org").unwrap(),
        ];
        let policy = AddressPolicy::default();
        let parse = |url| Target::parse(url, Some(&hosts), &policy);
        assert!(parse("http://hooks.example.com/done").is_ok());
        assert!(parse("http://HOOKS.example.com:8443/done?t=1").is_ok());
        assert!(parse("http://a.b.example.org/").is_ok());
        assert!(matches!(
            parse("http://example.org/"),
            Err(TargetError::HostNotAllowed(_))
        ));
        assert!(matches!(
            parse("http://evil.com/"),
            Err(TargetError::HostNotAllowed(_))
        ));
        assert!(matches!(
            parse("http://hooks.example.com.evil.com/"),
            Err(TargetError::HostNotAllowed(_))
        ));
        assert!(matches!(
            parse("http://x@hooks.example.com/"),
            Err(TargetError::Userinfo)
        ));
        assert!(matches!(
            parse("ftp://hooks.example.com/"),
            Err(TargetError::Scheme)
        ));
        assert!(matches!(parse("/relative"), Err(TargetError::Invalid)));
        assert!(matches!(parse("not a url"), Err(TargetError::Invalid)));
        let long = format!("http://hooks.example.com/{}", "a".repeat(MAX_URL_LENGTH));
        assert!(matches!(parse(&long), Err(TargetError::TooLong)));
    }

    #[test]
    fn address_literals_are_checked_even_when_the_host_is_allowed() {
        let hosts = [
            HostPattern::parse("169.254.169.254").unwrap(),
            HostPattern::parse("[::1]").unwrap(),
        ];
        let policy = AddressPolicy::default();
        assert!(matches!(
            Target::parse(
                "http://169.254.169.254/latest/meta-data/",
                Some(&hosts),
                &policy
            ),
            Err(TargetError::AddressRefused(_))
        ));
        assert!(matches!(
            Target::parse("http://[::1]:9000/", None, &policy),
            Err(TargetError::AddressRefused(_))
        ));
    }

    #[test]
    fn the_query_is_not_shown() {
        let t = Target::parse(
            "http://hooks.example.com/done?token=s3cret",
            None,
            &Default::default(),
        )
        .unwrap();
        assert_eq!(t.shown(), "http://hooks.example.com/done");
    }

    #[tokio::test]
    async fn names_are_judged_by_every_address_they_resolve_to() {
        let guard = guard(AddressPolicy::default());
        assert!(guard.addresses("hooks.example.com").await.is_ok());
        for host in [
            "internal.example.com",
            "metadata.example.com",
            "mixed.example.com",
            "v6-metadata.example.com",
            "mapped.example.com",
            "alibaba.example.com",
        ] {
            assert!(
                matches!(
                    guard.addresses(host).await,
                    Err(TargetError::AddressRefused(_))
                ),
                "{host} should be refused"
            );
        }
        assert!(matches!(
            guard.addresses("nowhere.example.com").await,
            Err(TargetError::Unresolvable(..))
        ));
    }

    #[tokio::test]
    async fn the_connector_gets_only_checked_addresses() {
        use tower::ServiceExt;
        let guard = guard(AddressPolicy::default());
        let name: Name = "hooks.example.com".parse().unwrap();
        let addrs: Vec<_> = guard.clone().oneshot(name).await.unwrap().collect();
        assert_eq!(addrs, vec!["93.184.216.34:0".parse().unwrap()]);
        let name: Name = "metadata.example.com".parse().unwrap();
        assert!(guard.oneshot(name).await.is_err());
    }
}
