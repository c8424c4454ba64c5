from dmn.cli import main

main()
