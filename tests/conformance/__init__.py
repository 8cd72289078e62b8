"""The provider conformance suite: one set of tests run against every target."""
