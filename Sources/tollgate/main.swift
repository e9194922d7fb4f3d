import Tollgate

TollgateCLI.main()
