//! Harness for the end-to-end tests lives in `tests/e2e/`.
