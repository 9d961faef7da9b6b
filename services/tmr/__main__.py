from tmr.cli.main import main

raise SystemExit(main())
