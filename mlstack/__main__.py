from mlstack.cli.main import main

raise SystemExit(main())
