"""The polling engine: profiles + bus owners in, readings out (see ``engine.Poller``)."""
