"""Small fake servers at the network edge: real HTTP on loopback, recording what arrives."""
