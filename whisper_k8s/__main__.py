from whisper_k8s.cli.main import main

raise SystemExit(main())
