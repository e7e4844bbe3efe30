from app.cli.main.main import main

raise SystemExit(main())
