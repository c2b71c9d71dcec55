from dlstream.cli.main import main

main()
