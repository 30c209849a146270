"""mlstack docs [SPEC]: a static HTML report of the system (like `dbt docs`), optionally served."""

from __future__ import annotations

import argparse
import sys

from mlstack.cli.arguments import add_format, add_spec, add_verb, port_or_zero, spec_of

HELP = "write a static HTML report of the system (graph, features, model, SLOs, rollouts)"


def register(sub) -> None:
    p = add_verb(sub, "docs", HELP, HELP + ": the system graph, the feature catalog, the "
                 "model card of every deployed version, the SLO verification of every deploy "
                 "with latency plots, the rollout history, the monitoring flow's last report "
                 "and the current plan. One self-contained folder (HTML with inline CSS and "
                 "SVG, no script, nothing loaded from elsewhere); the same inputs give the "
                 "same bytes. A folder not written by mlstack docs is never replaced.")
    add_spec(p)
    p.add_argument("-o", "--out", metavar="DIR",
                   help="folder to write (default: <spec folder>/build/docs)")
    p.add_argument("--serve", action="store_true",
                   help="then serve it on 127.0.0.1 until Ctrl-C")
    p.add_argument("--port", type=port_or_zero, default=8080,
                   help="port for --serve (default 8080; 0 picks a free one)")
    add_format(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mlstack.cli.output import write_json, write_warnings
    from mlstack.ops.site.build import build_site, default_out_dir, write_site

    spec = spec_of(args)
    site = build_site(spec)
    out = write_site(site, args.out if args.out is not None else default_out_dir(spec))
    server = None
    if args.serve:
        from mlstack.ops.site.serve import docs_server, server_url

        server = docs_server(out, args.port)
    url = server_url(server) if server is not None else None
    if args.format == "json":
        write_json({"system": site.system, "out": str(out), "pages": site.pages,
                    "files": sorted(site.files), "url": url})
    else:
        write_warnings(site.data.warnings)
        sys.stdout.write(f"Wrote the {site.system} report to {out} ({len(site.pages)} pages): "
                         f"open {out / 'index.html'}\n")
        if url:
            sys.stdout.write(f"Serving it at {url} (Ctrl-C stops)\n")
    if server is None:
        return 0
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
