//! sealwatch agent library.
