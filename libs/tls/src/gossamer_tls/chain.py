"""Certificate path validation against a set of trust anchors at a given time.

The identity service must refuse to start with an issuer that does not chain to the anchors, and
tests and the CLI must check that leaves verify the way a proxy will check them. This is a small,
explicit RFC 5280 path builder: it tries each candidate parent (matched by name and key id),
checks signatures, validity at ``now``, cA/keyCertSign, path lengths and DNS name constraints,
and explains in the :class:`ChainError` which certificate failed and why.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

from gossamer_tls.authority import check_ca_certificate
from gossamer_tls.errors import CertificateError, ChainError

MAX_CHAIN_DEPTH = 8


@dataclass(frozen=True, slots=True)
class VerifiedChain:
    """A path from the verified certificate (first) to the trust anchor (last)."""

    path: tuple[x509.Certificate, ...]

    @property
    def leaf(self) -> x509.Certificate:
        return self.path[0]

    @property
    def anchor(self) -> x509.Certificate:
        return self.path[-1]


def describe(certificate: x509.Certificate) -> str:
    """``'CN=…'`` for error messages (subject, or serial when the subject is empty)."""
    subject = certificate.subject.rfc4514_string()
    return repr(subject) if subject else f"serial {certificate.serial_number:x}"


def check_validity(certificate: x509.Certificate, now: dt.datetime) -> None:
    """Raise :class:`ChainError` if ``certificate`` is not valid at ``now``."""
    if now < certificate.not_valid_before_utc:
        raise ChainError(
            f"certificate {describe(certificate)} is not valid until "
            f"{certificate.not_valid_before_utc.isoformat()} (now {now.isoformat()})"
        )
    if now > certificate.not_valid_after_utc:
        raise ChainError(
            f"certificate {describe(certificate)} expired at "
            f"{certificate.not_valid_after_utc.isoformat()} (now {now.isoformat()})"
        )


def dns_names(certificate: x509.Certificate) -> list[str]:
    """The certificate's DNS SANs (empty if it has no subjectAltName)."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.DNSName)


def _dns_matches(name: str, constraint: str) -> bool:
    name, constraint = name.lower().rstrip("."), constraint.lower().rstrip(".")
    if constraint.startswith("."):
        return name.endswith(constraint)
    return name == constraint or name.endswith("." + constraint)


def _check_name_constraints(ca: x509.Certificate, below: Sequence[x509.Certificate]) -> None:
    try:
        constraints = ca.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return
    permitted = constraints.permitted_subtrees or []
    excluded = constraints.excluded_subtrees or []
    permitted_dns = [c.value for c in permitted if isinstance(c, x509.DNSName)]
    excluded_dns = [c.value for c in excluded if isinstance(c, x509.DNSName)]
    unsupported = {
        type(c).__name__ for c in (*permitted, *excluded) if not isinstance(c, x509.DNSName)
    }
    for certificate in below:
        try:
            san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            continue
        for general_name in san:
            if not isinstance(general_name, x509.DNSName):
                if type(general_name).__name__ in unsupported:
                    raise ChainError(
                        f"CA {describe(ca)} has {type(general_name).__name__} name constraints, "
                        "which Gossamer does not evaluate"
                    )
                continue
            name = general_name.value
            if permitted_dns and not any(_dns_matches(name, c) for c in permitted_dns):
                raise ChainError(
                    f"DNS name {name!r} of {describe(certificate)} is outside the names "
                    f"permitted by CA {describe(ca)}: {permitted_dns}"
                )
            if any(_dns_matches(name, c) for c in excluded_dns):
                raise ChainError(
                    f"DNS name {name!r} of {describe(certificate)} is excluded by CA {describe(ca)}"
                )


def _path_length(ca: x509.Certificate) -> int | None:
    try:
        return ca.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length
    except x509.ExtensionNotFound:
        return None


def _key_ids_compatible(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        aki = child.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        ski = parent.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return True
    return aki.key_identifier is None or aki.key_identifier == ski.digest


def _signed_by(child: x509.Certificate, parent: x509.Certificate) -> str | None:
    """``None`` if ``parent`` issued ``child``, else why not."""
    if child.issuer != parent.subject:
        return "issuer name differs"
    if not _key_ids_compatible(child, parent):
        return "authority key identifier differs"
    try:
        child.verify_directly_issued_by(parent)
    except InvalidSignature:
        return "signature does not verify"
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        return f"signature cannot be checked: {exc}"
    return None


def _check_ca_in_path(
    path: Sequence[x509.Certificate], ca: x509.Certificate, now: dt.datetime
) -> None:
    try:
        check_ca_certificate(ca, what=f"certificate {describe(ca)}")
    except CertificateError as exc:
        raise ChainError(str(exc)) from None
    check_validity(ca, now)
    # Intermediates below this CA, not counting the certificate being verified (RFC 5280 6.1.4).
    limit = _path_length(ca)
    below_count = len(path) - 1
    if limit is not None and below_count > limit:
        raise ChainError(
            f"CA {describe(ca)} allows {limit} intermediate(s) below it, the path has {below_count}"
        )
    _check_name_constraints(ca, path)


def verify_chain(
    certificate: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    *,
    now: dt.datetime,
    dns_name: str | None = None,
) -> VerifiedChain:
    """Verify ``certificate`` (a leaf, or an issuer being loaded) up to one of ``anchors``.

    ``intermediates`` may be in any order and may contain extras. With ``dns_name``, the
    certificate must also carry that DNS SAN (how a proxy checks a peer's identity).
    Raises :class:`ChainError` naming the first problem found on the most promising path.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if not anchors:
        raise ChainError("no trust anchors to verify against")
    check_validity(certificate, now)
    if dns_name is not None:
        names = dns_names(certificate)
        if dns_name.lower().rstrip(".") not in {n.lower().rstrip(".") for n in names}:
            raise ChainError(
                f"certificate {describe(certificate)} is not valid for {dns_name!r} "
                f"(its DNS names are {names})"
            )
    if any(certificate == anchor for anchor in anchors):
        return VerifiedChain((certificate,))
    reasons: list[str] = []
    path = _extend([certificate], intermediates, anchors, now, reasons)
    if path is not None:
        return VerifiedChain(tuple(path))
    detail = "; ".join(dict.fromkeys(reasons)) or "no certificate found that issued it"
    raise ChainError(
        f"certificate {describe(certificate)} does not chain to the trust anchors: {detail}"
    )


def _extend(
    path: list[x509.Certificate],
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    now: dt.datetime,
    reasons: list[str],
) -> list[x509.Certificate] | None:
    current = path[-1]
    for anchor in anchors:
        why = _signed_by(current, anchor)
        if why is not None:
            if current.issuer == anchor.subject:
                reasons.append(f"anchor {describe(anchor)}: {why}")
            continue
        try:
            _check_ca_in_path(path, anchor, now)
        except ChainError as exc:
            reasons.append(str(exc))
            continue
        return [*path, anchor]
    if len(path) >= MAX_CHAIN_DEPTH:
        reasons.append(f"chain longer than {MAX_CHAIN_DEPTH} certificates")
        return None
    for candidate in intermediates:
        if any(candidate == seen for seen in path):
            continue
        why = _signed_by(current, candidate)
        if why is not None:
            if current.issuer == candidate.subject:
                reasons.append(f"intermediate {describe(candidate)}: {why}")
            continue
        try:
            _check_ca_in_path(path, candidate, now)
        except ChainError as exc:
            reasons.append(str(exc))
            continue
        found = _extend([*path, candidate], intermediates, anchors, now, reasons)
        if found is not None:
            return found
    if not reasons:
        reasons.append(
            f"no trust anchor or intermediate is named {current.issuer.rfc4514_string()!r}"
        )
    return None
