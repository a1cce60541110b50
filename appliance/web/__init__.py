"""The appliance's web face: the first-boot setup wizard and the owner's dashboard."""
