from mlops.steps.cli import main

raise SystemExit(main())
