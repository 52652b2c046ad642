"""The top floor: what people run (`gridedge` and its subcommands, the demo, provisioning,
the platform's verifier). It stands on the gateway (edge/), never the other way round."""
