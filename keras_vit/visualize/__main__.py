"""`python -m keras_vit.visualize`: see `keras_vit.visualize.report`."""

from keras_vit.visualize.report import main

raise SystemExit(main())
