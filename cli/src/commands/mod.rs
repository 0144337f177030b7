//! One module per `trustbridge` subcommand.

pub(crate) mod add_measurement;
pub(crate) mod demo;
pub(crate) mod eif;
pub(crate) mod inspect;
pub(crate) mod kds;
pub(crate) mod key_release;
pub(crate) mod keygen;
pub(crate) mod kms_admin;
pub(crate) mod policy;
pub(crate) mod proxy;
pub(crate) mod raw_stream;
pub(crate) mod runtime;
pub(crate) mod seal;
pub(crate) mod unseal;
