from tmr.cli.main import main

if __name__ == "__main__":  # not when a spawned worker process imports it (tmr.report.offload)
    raise SystemExit(main())
