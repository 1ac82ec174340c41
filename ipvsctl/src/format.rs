//! `ipvsadm -Ln`-style listings.
