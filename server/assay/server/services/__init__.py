"""gRPC servicers: proto <-> domain conversion only; no logic lives here."""
