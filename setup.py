# nbdev 2 template setup.py: everything is read from settings.ini
from configparser import ConfigParser
import setuptools

config = ConfigParser(delimiters=['='])
config.read('settings.ini', encoding='utf-8')
cfg = config['DEFAULT']

for key in 'version description keywords author author_email'.split():
    assert key in cfg, f'settings.ini is missing `{key}`'

def reqs(key): return cfg.get(key, '').split()

requirements = reqs('requirements')
extras = {'serving': reqs('serving_requirements'), 'dev': reqs('dev_requirements'), 'gpu': reqs('gpu_requirements')}
extras['all'] = sorted(set(extras['serving'] + extras['dev']))   # not `gpu`: vLLM needs a CUDA host

setuptools.setup(
    name=cfg['lib_name'],
    version=cfg['version'],
    description=cfg['description'],
    license='Apache Software License 2.0',
    author=cfg['author'], author_email=cfg['author_email'],
    keywords=cfg['keywords'],
    packages=setuptools.find_packages(include=[cfg['lib_name'], cfg['lib_name'] + '.*']),
    include_package_data=True,
    install_requires=requirements,
    extras_require=extras,
    python_requires='>=' + cfg['min_python'],
    zip_safe=False,
    entry_points={
        'console_scripts': cfg.get('console_scripts', '').split(),
        'nbdev': [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"],
    },
)
