//! Whether a certificate names a host: how a node checks that a peer
//! asking to join or to be assigned an id is the address it claims.

use rustls::pki_types::{CertificateDer, ServerName};

/// The host part of `host:port` (`[::1]:5001` gives `::1`).
pub fn host_of(addr: &str) -> &str {
    let host = match addr.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => addr,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

/// True when `cert` is valid for `host` (a DNS name or an IP address),
/// by the same rules a TLS client applies to a server.
pub fn certificate_names(cert: &CertificateDer<'_>, host: &str) -> bool {
    let Ok(name) = ServerName::try_from(host) else {
        return false;
    };
    let Ok(cert) = webpki::EndEntityCert::try_from(cert) else {
        return false;
    };
    cert.verify_is_valid_for_subject_name(&name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_strips_port_and_brackets() {
        assert_eq!(host_of("10.0.0.1:5001"), "10.0.0.1");
        assert_eq!(host_of("[::1]:5001"), "::1");
        assert_eq!(host_of("tcr-0.tcr:5001"), "tcr-0.tcr");
        assert_eq!(host_of("tcr-0.tcr"), "tcr-0.tcr");
    }

    #[test]
    fn a_certificate_names_only_its_hosts() {
        let ca = crate::issue::Ca::new("test CA").unwrap();
        let (pem, _) = ca
            .issue(&["10.0.0.1".to_string(), "tcr-0.tcr".to_string()])
            .unwrap();
        let der = crate::identity::parse_certs("test", pem.as_bytes()).unwrap();
        assert!(certificate_names(&der[0], "10.0.0.1"));
        assert!(certificate_names(&der[0], "tcr-0.tcr"));
        assert!(!certificate_names(&der[0], "10.0.0.2"));
        assert!(!certificate_names(&der[0], "tcr-1.tcr"));
        assert!(!certificate_names(&der[0], "not a name"));
    }
}
