"""imagine on Ray Serve: the same HTTP app as an ingress, model replicas routed by model id.

    deployments.py   the Serve application (Ingress, ModelReplica, build_app)
    remote_engine.py the engine protocol over replica streams (RemoteEngine, RemoteJob)
    model_host.py    a replica's models, each on imagine's own Engine (ModelHost)
    events.py        what a replica streams back (snapshots, Finished, Failed)
    config.py        RayOptions (IMAGINE_RAY_*) for `imagine serve --ray`
    runner.py        `imagine serve --ray`: Ray and Serve in this process, stopped on SIGTERM

Only deployments.py and runner.py import Ray (the `ray` extra); the rest is plain imagine.
"""
