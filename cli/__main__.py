from fedrec.cli.main import main

main()
