from bnnns.experiments._legacy import main

main()
